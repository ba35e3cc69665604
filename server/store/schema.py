"""The relational schema, declared once (SQLAlchemy Core + geoalchemy2).

Alembic migrations in ``migrations/versions`` are generated from and checked against this
metadata. Hot paths (ingest COPY, tiles) use asyncpg with plain SQL against these tables.
"""

from __future__ import annotations

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from server.vocab import AlarmState, CommandState, values

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

NOW = text("now()")
# Web Mercator metres of a device's point (a point on its surface for lines and polygons), as
# stored columns: the low-zoom grid aggregates bin every device of a tile by them, and the
# per-row ln(tan(...)) was a third of a z12 aggregate tile's time (tiles/sql.py).
_ANCHOR = "case when GeometryType(geom) = 'POINT' then geom else ST_PointOnSurface(geom) end"
MERC_X = f"6378137.0 * radians(ST_X({_ANCHOR}))"
# Latitude clamped to the Web Mercator square (as tiles are): -90 would be ln(0), an error.
MERC_Y = (f"6378137.0 * ln(tan(pi() / 4 + radians(least(greatest(ST_Y({_ANCHOR}), -85.0511287798066),"
          " 85.0511287798066)) / 2))")
EMPTY_JSON = text("'{}'::jsonb")


def _ts(name: str, **kw) -> Column:
    return Column(name, DateTime(timezone=True), **kw)


def chain_columns() -> list[Column]:
    """A row's link in its table's hash chain, set by a trigger (server/store/chain.py)."""
    return [Column("chain_seq", BigInteger), Column("prev_hash", LargeBinary),
            Column("hash", LargeBinary)]


# ---------------------------------------------------------------- catalogue
kinds = Table(
    "kinds",
    metadata,
    Column("kind", Text, primary_key=True),
    Column("label_en", Text, nullable=False),
    Column("label_vi", Text, nullable=False),
    # NULL: the kind accepts any metric; otherwise readings of other metrics are dead letters.
    Column("metrics", ARRAY(Text)),
    Column("expected_interval_s", Integer, nullable=False, server_default=text("60")),
)

metrics = Table(
    "metrics",
    metadata,
    Column("id", SmallInteger, Identity(always=False), primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("unit", Text),
    Column("value_type", Text, nullable=False, server_default=text("'number'")),
    Column("description", Text),
    CheckConstraint("value_type in ('number', 'bool')", name="value_type"),
    CheckConstraint("name ~ '^[a-z][a-z0-9_]*$'", name="snake_case"),
)

# ---------------------------------------------------------------- basemap
wards = Table(
    "wards",
    metadata,
    Column("code", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("properties", JSONB, nullable=False, server_default=EMPTY_JSON),
    Column("geom", Geometry("GEOMETRY", srid=4326, spatial_index=True), nullable=False),
)

roads = Table(
    "roads",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("name", Text, nullable=False),
    Column("class", Text, nullable=False),
    Column("geom", Geometry("LINESTRING", srid=4326, spatial_index=True), nullable=False),
)

# ---------------------------------------------------------------- devices
devices = Table(
    "devices",
    metadata,
    # A small integer key keeps telemetry rows narrow; the text id is what people see.
    Column("key", Integer, Identity(), primary_key=True),
    Column("id", Text, nullable=False, unique=True),
    Column("kind", Text, ForeignKey("kinds.kind"), nullable=False),
    Column("name", Text, nullable=False, server_default=text("''")),
    Column("geom", Geometry("GEOMETRY", srid=4326, spatial_index=True), nullable=False),
    Column(
        "parent",
        Text,
        ForeignKey("devices.id", ondelete="SET NULL", onupdate="CASCADE", deferrable=True,
                   initially="DEFERRED"),
    ),
    Column("external_id", Text, unique=True),
    Column("ward", Text),
    Column("properties", JSONB, nullable=False, server_default=EMPTY_JSON),
    Column("adapter", Text),
    Column("adapter_config", JSONB),
    Column("expected_interval_s", Integer),
    _ts("created_at", nullable=False, server_default=NOW),
    _ts("updated_at", nullable=False, server_default=NOW),
    Column("merc_x", Float(53), Computed(MERC_X, persisted=True)),
    Column("merc_y", Float(53), Computed(MERC_Y, persisted=True)),
    CheckConstraint("id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'", name="id_format"),
    CheckConstraint("ST_IsValid(geom)", name="geom_valid"),
)
Index("ix_devices_kind", devices.c.kind)
Index("ix_devices_parent", devices.c.parent)
Index("ix_devices_ward", devices.c.ward)

device_state = Table(
    "device_state",
    metadata,
    Column("device_key", Integer, ForeignKey("devices.key", ondelete="CASCADE"), primary_key=True),
    # metric name -> latest value / its device timestamp (epoch ms) / quality (0 ok).
    Column("values", JSONB, nullable=False, server_default=EMPTY_JSON),
    Column("times", JSONB, nullable=False, server_default=EMPTY_JSON),
    Column("quality", JSONB, nullable=False, server_default=EMPTY_JSON),
    _ts("last_seen"),
    Column("status", Text, nullable=False, server_default=text("'unknown'")),
    _ts("status_changed_at"),
    _ts("updated_at", nullable=False, server_default=NOW),
    # When the staleness scan must look at this device again (never later than the moment
    # it would go stale or offline); NULL: nothing to watch (offline, or never reported).
    # The scan reads only rows whose time has come, through the partial index below.
    _ts("next_check"),
    CheckConstraint("status in ('online', 'stale', 'offline', 'unknown')", name="status"),
)

Index("ix_device_state_next_check", device_state.c.next_check,
      postgresql_where=text("next_check is not null"))

# Device counts per (kind, grid level, cell) for the aggregate tiles, kept by triggers on devices
# and device_state through tile_grid_log (migration 0018_tile_grid, tiles/sql.py DEVICE_GRID).
def _grid_counts() -> list[Column]:
    counts = [Column(c, Integer, nullable=False) for c in ("n", "online", "stale", "offline", "unknown")]
    return [*counts, Column("sx", BigInteger, nullable=False), Column("sy", BigInteger, nullable=False)]


tile_grid = Table(
    "tile_grid",
    metadata,
    Column("kind", Text, primary_key=True),
    Column("level", SmallInteger, primary_key=True),
    Column("cx", Integer, primary_key=True),
    Column("cy", Integer, primary_key=True),
    *_grid_counts(),
)

tile_grid_log = Table(
    "tile_grid_log",
    metadata,
    Column("kind", Text, nullable=False),
    Column("fx", Integer, nullable=False),
    Column("fy", Integer, nullable=False),
    *_grid_counts(),
)

# ---------------------------------------------------------------- telemetry
# Range-partitioned by day (see the ioc_ensure_telemetry_partition SQL function created by
# the migration). Idempotent on (device, metric, ts): the primary key includes the
# partition column, as PostgreSQL requires.
telemetry = Table(
    "telemetry",
    metadata,
    Column("device_key", Integer, nullable=False),
    Column("metric_id", SmallInteger, nullable=False),
    _ts("ts", nullable=False),
    Column("value", Float, nullable=False),
    Column("quality", SmallInteger, nullable=False, server_default=text("0")),
    _ts("received_at", nullable=False, server_default=NOW),
    PrimaryKeyConstraint("device_key", "metric_id", "ts"),
    postgresql_partition_by="RANGE (ts)",
)

Index("ix_telemetry_ts_brin", telemetry.c.ts, postgresql_using="brin")

telemetry_hourly = Table(
    "telemetry_hourly",
    metadata,
    Column("device_key", Integer, nullable=False),
    Column("metric_id", SmallInteger, nullable=False),
    _ts("hour", nullable=False),
    Column("n", Integer, nullable=False),
    Column("sum", Float, nullable=False),
    Column("min", Float, nullable=False),
    Column("max", Float, nullable=False),
    _ts("last_ts", nullable=False),
    Column("last_value", Float, nullable=False),
    PrimaryKeyConstraint("device_key", "metric_id", "hour"),
)
# The rollup job reads and re-reads hours and days of it (and retention deletes by hour).
Index("ix_telemetry_hourly_hour", telemetry_hourly.c.hour, postgresql_using="brin")

# The same points as ``telemetry``, once a day is closed: one row per device x metric x UTC
# day, its timestamps, values and qualities encoded and zstd-compressed in ``data``
# (server/store/compress.py). ``data`` is stored EXTERNAL (set by the migration): already
# compressed, PostgreSQL would only spend time trying again.
telemetry_segments = Table(
    "telemetry_segments",
    metadata,
    Column("device_key", Integer, nullable=False),
    Column("metric_id", SmallInteger, nullable=False),
    Column("day", Date, nullable=False),
    Column("n", Integer, nullable=False),
    _ts("ts_first", nullable=False),
    _ts("ts_last", nullable=False),
    Column("data", LargeBinary, nullable=False),
    # the newest reading (at ts_last), plain: read without decoding (NULL: decode)
    Column("last_value", Float),
    Column("last_quality", SmallInteger),
    PrimaryKeyConstraint("device_key", "metric_id", "day"),
)
Index("ix_telemetry_segments_day", telemetry_segments.c.day)

# Whole UTC days of the hourly rollups, summed (kept after the hourly ones expire).
telemetry_daily = Table(
    "telemetry_daily",
    metadata,
    Column("device_key", Integer, nullable=False),
    Column("metric_id", SmallInteger, nullable=False),
    _ts("day", nullable=False),
    Column("n", Integer, nullable=False),
    Column("sum", Float, nullable=False),
    Column("min", Float, nullable=False),
    Column("max", Float, nullable=False),
    _ts("last_ts", nullable=False),
    Column("last_value", Float, nullable=False),
    PrimaryKeyConstraint("device_key", "metric_id", "day"),
)

# Hours that received readings after they had ended (late or backfilled data), marked by a
# statement trigger on telemetry: the next rollup recomputes them (and their days).
telemetry_dirty = Table(
    "telemetry_dirty",
    metadata,
    _ts("hour", primary_key=True),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    _ts("received_at", nullable=False, server_default=NOW),
    Column("source", Text, nullable=False),
    Column("device_id", Text),
    Column("topic", Text),
    Column("field", Text),
    Column("reason", Text, nullable=False),
    # At most [ingest] dead_letter_max_kib of it, once per input; payload_size: its length.
    Column("payload", LargeBinary),
    Column("payload_size", Integer),
)
Index("ix_dead_letters_received_at", dead_letters.c.received_at)

# ---------------------------------------------------------------- rules and alarms
rules = Table(
    "rules",
    metadata,
    Column("id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("document", JSONB, nullable=False),
    Column("source", Text, nullable=False, server_default=text("'api'")),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    _ts("created_at", nullable=False, server_default=NOW),
    _ts("updated_at", nullable=False, server_default=NOW),
)

# Every change of a rule (API writes, and rule files as they are loaded or changed): who,
# when and the document before and after, so the console can show what changed.
rule_history = Table(
    "rule_history",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("rule_id", Text, nullable=False),
    _ts("at", nullable=False, server_default=NOW),
    Column("actor", Text, nullable=False),  # a token's actor, or "file"
    Column("action", Text, nullable=False),  # create, update, delete, enable, disable
    Column("source", Text, nullable=False),  # api or file:<path>
    Column("before", JSONB),  # null for a create
    Column("after", JSONB),  # null for a delete
)
Index("ix_rule_history_rule_id_id", rule_history.c.rule_id, rule_history.c.id)

crews = Table(
    "crews",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("ward", Text),
    Column("location", Geometry("POINT", srid=4326, spatial_index=True)),
    Column("available", Boolean, nullable=False, server_default=text("true")),
    Column("escalation_level", SmallInteger, nullable=False, server_default=text("1")),
    Column("contacts", JSONB, nullable=False, server_default=EMPTY_JSON),
    _ts("updated_at", nullable=False, server_default=NOW),
)

ALARM_STATES = values(AlarmState)

alarms = Table(
    "alarms",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("rule", Text, nullable=False),
    Column("device", Text, nullable=False),
    Column("severity", Text, nullable=False),
    Column("priority", SmallInteger, nullable=False, server_default=text("3")),
    Column("state", Text, nullable=False, server_default=text("'active_unacked'")),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    _ts("shelved_until"),
    Column("suppressed", Boolean, nullable=False, server_default=text("false")),
    Column("chattering", Boolean, nullable=False, server_default=text("false")),
    Column("out_of_service", Boolean, nullable=False, server_default=text("false")),
    _ts("raised_at", nullable=False, server_default=NOW),
    _ts("acked_at"),
    Column("acked_by", Text),
    _ts("cleared_at"),
    _ts("closed_at"),
    Column("value", Float),
    Column("message", Text, nullable=False, server_default=text("''")),
    # What the message says, as data (rule kind, metric, unit, value, limit): migration 0014_alarm_context.
    Column("context", JSONB),
    Column("geom", Geometry("GEOMETRY", srid=4326, spatial_index=True)),
    Column("incident", BigInteger, ForeignKey("alarms.id", ondelete="SET NULL")),
    Column("assigned_crew", Text, ForeignKey("crews.id", ondelete="SET NULL")),
    Column("work_state", Text),
    Column("dedup_key", Text, nullable=False),
    _ts("updated_at", nullable=False, server_default=NOW),
    CheckConstraint("severity in ('critical', 'major', 'minor', 'warning')", name="severity"),
    CheckConstraint(f"state in {ALARM_STATES!r}", name="state"),
)
# One alarm per (rule, device) at a time: a partial unique index over the open ones.
Index(
    "uq_alarms_open_rule_device",
    alarms.c.rule,
    alarms.c.device,
    unique=True,
    postgresql_where=text("state <> 'closed'"),
)
Index("ix_alarms_state", alarms.c.state)
Index("ix_alarms_device", alarms.c.device)
Index("ix_alarms_incident", alarms.c.incident)

alarm_events = Table(
    "alarm_events",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("alarm_id", BigInteger, ForeignKey("alarms.id", ondelete="CASCADE"), nullable=False),
    _ts("at", nullable=False, server_default=NOW),
    Column("event", Text, nullable=False),
    Column("actor", Text),
    Column("reason", Text),
    Column("details", JSONB, nullable=False, server_default=EMPTY_JSON),
    # The alarm row as it stood after this event, copied by a trigger (migration 0007).
    Column("alarm", JSONB),
    *chain_columns(),
)
Index("ix_alarm_events_chain_seq", alarm_events.c.chain_seq, unique=True)
Index("ix_alarm_events_alarm_id", alarm_events.c.alarm_id)
Index("ix_alarm_events_at", alarm_events.c.at)

notification_outbox = Table(
    "notification_outbox",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("alarm_id", BigInteger, ForeignKey("alarms.id", ondelete="CASCADE")),
    Column("event", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("dedup_key", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    _ts("next_attempt_at", nullable=False, server_default=NOW),
    Column("last_error", Text),
    _ts("created_at", nullable=False, server_default=NOW),
    _ts("delivered_at"),
    CheckConstraint(
        "status in ('pending', 'delivered', 'failed', 'fallback')", name="status"
    ),
)
Index(
    "ix_notification_outbox_due",
    notification_outbox.c.next_attempt_at,
    postgresql_where=text("status = 'pending'"),
)

# ---------------------------------------------------------------- commands
COMMAND_STATES = values(CommandState)

commands = Table(
    "commands",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("device", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("args", JSONB, nullable=False, server_default=EMPTY_JSON),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("group_id", UUID(as_uuid=True)),
    Column("requested_by", Text),
    _ts("created_at", nullable=False, server_default=NOW),
    _ts("sent_at"),
    _ts("finished_at"),
    _ts("expires_at", nullable=False),
    Column("result", JSONB),
    Column("error", Text),
    CheckConstraint(f"status in {COMMAND_STATES!r}", name="status"),
)
Index("ix_commands_device", commands.c.device)
Index("ix_commands_group_id", commands.c.group_id)
# The open ones, read at start-up to resume or expire them.
Index("ix_commands_open", commands.c.created_at,
      postgresql_where=text("status in ('pending', 'sent')"))

command_groups = Table(
    "command_groups",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("name", Text, nullable=False),
    Column("args", JSONB, nullable=False, server_default=EMPTY_JSON),
    # The selection as the operator sent it: ward, parent, bbox, kind and/or devices.
    Column("target", JSONB, nullable=False),
    Column("requested_by", Text),
    _ts("created_at", nullable=False, server_default=NOW),
    Column("total", Integer, nullable=False),
    # Devices the target selected but that cannot take the command, with the reason.
    Column("skipped", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
)

# Lighting schedules (dimming profiles, rules/schedules.py) and where each stands: the
# scheduler (server/schedules/) commands every step start up to ``applied_until`` once.
schedules = Table(
    "schedules",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=text("''")),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    # A lamp in several schedules follows the highest priority (then the smallest target).
    Column("priority", SmallInteger, nullable=False, server_default=text("0")),
    Column("target", JSONB, nullable=False),  # a group command's target
    Column("steps", JSONB, nullable=False),
    Column("exceptions", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("version", Integer, nullable=False, server_default=text("1")),
    Column("created_by", Text),
    _ts("created_at", nullable=False, server_default=NOW),
    _ts("updated_at", nullable=False, server_default=NOW),
    # Every step that started up to here has been commanded; null: the current one is due.
    _ts("applied_until"),
    Column("last_step", JSONB),  # what was commanded last: step, level, devices, groups
    _ts("last_applied_at"),
)

# ---------------------------------------------------------------- security and audit
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("name", Text, nullable=False),
    Column("role", Text, nullable=False),
    # sha256 of the token: tokens are 256-bit random, so a fast hash is enough (no
    # dictionary to attack), and lookups stay one index probe per request.
    Column("token_hash", Text, nullable=False),
    Column("prefix", Text, nullable=False),
    Column("crew", Text, ForeignKey("crews.id", ondelete="SET NULL")),
    _ts("created_at", nullable=False, server_default=NOW),
    _ts("last_used_at"),
    _ts("revoked_at"),
    # 'api': made by an admin; 'sign_in': a short-lived link's token, only exchanged for a
    # 'session' (the pages' cookie), which is revoked with the token it came from (parent).
    Column("kind", Text, nullable=False, server_default=text("'api'")),
    _ts("expires_at"),
    Column("parent_id", Integer, ForeignKey("api_tokens.id", ondelete="CASCADE")),
    UniqueConstraint("token_hash"),
    CheckConstraint(
        "role in ('viewer', 'crew', 'operator', 'integrator', 'admin')", name="role"
    ),
    CheckConstraint("kind in ('api', 'sign_in', 'session')", name="kind"),
)
Index("ix_api_tokens_parent_id", api_tokens.c.parent_id)

# A device's MQTT password, kept only as mosquitto's own PBKDF2-SHA512 hash ("$7$..."), so
# the broker's password file can be written from here without anyone knowing the password.
device_credentials = Table(
    "device_credentials",
    metadata,
    Column("device_id", Text, ForeignKey("devices.id", ondelete="CASCADE", onupdate="CASCADE"),
           primary_key=True),
    Column("password_hash", Text, nullable=False),
    _ts("issued_at", nullable=False, server_default=NOW),
    Column("issued_by", Text),
    CheckConstraint("password_hash like '$7$%'", name="mosquitto_pbkdf2"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    _ts("at", nullable=False, server_default=NOW),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("device", Text),
    Column("target", Text),
    Column("details", JSONB, nullable=False, server_default=EMPTY_JSON),
    *chain_columns(),
)
Index("ix_audit_log_at", audit_log.c.at)
Index("ix_audit_log_chain_seq", audit_log.c.chain_seq, unique=True)
Index("ix_audit_log_actor", audit_log.c.actor)
Index("ix_audit_log_device", audit_log.c.device)

meta = Table(
    "ioc_meta",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", JSONB, nullable=False),
    _ts("updated_at", nullable=False, server_default=NOW),
)

# ---------------------------------------------------------------- citizens' reports (0010)
reports = Table(
    "reports",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    # the public tracking code: random (secrets.token_urlsafe(12), 96 bits), never guessable
    Column("code", Text, nullable=False, unique=True),
    Column("category", Text, nullable=False),
    Column("geom", Geometry("POINT", srid=4326, spatial_index=True), nullable=False),
    Column("ward", Text),
    Column("description", Text, nullable=False),
    Column("contact", Text),  # private: never in a public answer
    Column("status", Text, nullable=False, server_default=text("'received'")),
    Column("unit", Text),
    Column("crew", Text, ForeignKey("crews.id", ondelete="SET NULL")),
    Column("device", Text),
    Column("alarm_id", BigInteger, ForeignKey("alarms.id", ondelete="SET NULL")),
    Column("reporters", Integer, nullable=False, server_default=text("1")),
    _ts("created_at", nullable=False, server_default=NOW),
    _ts("updated_at", nullable=False, server_default=NOW),
    _ts("resolved_at"),
    _ts("sla_due", nullable=False),
)
Index("ix_reports_status", reports.c.status)
Index("ix_reports_created_at", reports.c.created_at)

report_codes = Table(  # every code handed out; a merged report's code points at the kept one
    "report_codes",
    metadata,
    Column("code", Text, primary_key=True),
    Column("report_id", BigInteger, ForeignKey("reports.id", ondelete="CASCADE"), nullable=False),
)

# A phone's submission key (the Idempotency-Key header): sending the same report again after a
# lost answer returns the report it made, never a second one. Kept REPLAY_HOURS.
report_submissions = Table(
    "report_submissions",
    metadata,
    Column("key", Text, primary_key=True),
    Column("fingerprint", Text, nullable=False),  # sha256 of the fields: a reused key is refused
    Column("code", Text, ForeignKey("report_codes.code", ondelete="CASCADE")),
    _ts("at", nullable=False, server_default=NOW),
)
Index("ix_report_submissions_at", report_submissions.c.at)

report_events = Table(
    "report_events",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("report_id", BigInteger, ForeignKey("reports.id", ondelete="CASCADE"), nullable=False),
    _ts("at", nullable=False, server_default=NOW),
    Column("status", Text, nullable=False),
    Column("note", Text),
    Column("by", Text),
)
Index("ix_report_events_report_id", report_events.c.report_id)

report_photos = Table(
    "report_photos",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("report_id", BigInteger, ForeignKey("reports.id", ondelete="CASCADE"), nullable=False),
    Column("sha256", Text, nullable=False),
    Column("role", Text, nullable=False, server_default=text("'before'")),
    Column("bytes", Integer, nullable=False),
)
Index("ix_report_photos_report_id", report_photos.c.report_id)

report_ratings = Table(
    "report_ratings",
    metadata,
    Column("report_id", BigInteger, ForeignKey("reports.id", ondelete="CASCADE"), primary_key=True),
    Column("stars", SmallInteger, nullable=False),
    Column("comment", Text),
    _ts("at", nullable=False, server_default=NOW),
)

# ---------------------------------------------------------------- work orders (0015)
# Inspections and work on a device without telemetry (a tree's pruning, its removal), done
# by a crew on /crew: open -> in_progress -> done, each step an event with its note and photo.
WORK_ORDER_TYPES = ("inspection", "pruning", "removal")
WORK_ORDER_STATUSES = ("open", "in_progress", "done")
work_orders = Table(
    "work_orders",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("device", Text, ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
    Column("type", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'open'")),
    Column("crew", Text, ForeignKey("crews.id", ondelete="SET NULL")),
    Column("note", Text),
    Column("created_by", Text),
    _ts("created_at", nullable=False, server_default=NOW),
    _ts("updated_at", nullable=False, server_default=NOW),
    _ts("done_at"),
    CheckConstraint("type in ('inspection', 'pruning', 'removal')", name="type"),
    CheckConstraint("status in ('open', 'in_progress', 'done')", name="status"),
)
Index("ix_work_orders_device", work_orders.c.device)
Index("ix_work_orders_crew", work_orders.c.crew)

work_order_events = Table(
    "work_order_events",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("work_order_id", BigInteger, ForeignKey("work_orders.id", ondelete="CASCADE"), nullable=False),
    _ts("at", nullable=False, server_default=NOW),
    Column("status", Text, nullable=False),
    Column("note", Text),
    Column("photo", Text),  # the sha256 of a cleaned JPEG in the work photo store
    Column("by", Text),
)
Index("ix_work_order_events_work_order_id", work_order_events.c.work_order_id)
