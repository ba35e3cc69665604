"""Typed settings: environment variables (``IOC_*``) and the ``IOC_CONFIG`` TOML file.

Precedence, highest first: values passed in code (CLI flags), the environment, the TOML
file named by ``config`` / ``IOC_CONFIG``. Settings are built once in ``server.cli.main``
and handed to ``create_app``; nothing reads them at import time.
"""

from __future__ import annotations

import os
import tomllib
from datetime import time as dt_time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from adapters.modbus import GatewayConfig, UnitConfig
from adapters.sparkplug import SparkplugConfig
from server.vocab import Role, Severity, values
from tiles.config import TilesSettings

ROLES = values(Role)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# The adapter owns the shape of a gateway's configuration; the server only collects them.
ModbusUnit = UnitConfig
ModbusGateway = GatewayConfig


class ModbusSettings(_Section):
    gateways: list[ModbusGateway] = []

    @model_validator(mode="after")
    def _unique_names(self) -> ModbusSettings:
        names = [g.name for g in self.gateways]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"gateway names must be unique, repeated: {sorted(dupes)}")
        return self


class SparkplugSettings(SparkplugConfig):
    """``[sparkplug]`` (CONTRACT, "Standards"): the Sparkplug B adapter's own configuration
    (metric_map, host_id, rebirth_interval_s) and whether it runs at all."""

    enabled: bool = True


class RulesSettings(_Section):
    paths: list[str] = []
    # Rule files are re-read when they change; this is how often their mtimes are checked.
    reload_interval_s: float = Field(default=2.0, gt=0, le=3600)
    shelve_max_minutes: int = Field(default=480, ge=1, le=10_080,
                                    description="the longest an operator may shelve an alarm")
    operator_consoles: int = Field(default=1, ge=1, description="for the alarm-load KPIs")
    chatter_count: int = Field(default=3, ge=2, description="activations within chatter_window_s")
    chatter_window_s: float = Field(default=60.0, gt=0)


NOTIFY_EVENTS = ("raised", "acknowledged", "cleared", "closed", "shelved", "unshelved", "assigned",
                 "suppressed", "out_of_service", "comment", "work", "escalated")
Channel = Literal["webhook", "email", "crew"]


def _check_secret(v: str | None) -> str | None:
    """A Standard Webhooks secret: ``whsec_`` and base64 of 24 to 64 random bytes."""
    if v is None:
        return v
    import base64
    import binascii

    try:
        key = base64.b64decode(v.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"a webhook secret holds 24 to 64 bytes, this one {len(key)}")
    return v


class WebhookChannel(_Section):
    name: str = "webhook"
    url: str
    secret: str | None = Field(
        default=None, description="Standard Webhooks secret (whsec_... base64)"
    )
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    events: list[str] | None = Field(
        default=None, description="alarm events this endpoint wants (all when absent)")

    _secret = field_validator("secret")(_check_secret)

    @field_validator("events")
    @classmethod
    def _known_events(cls, v: list[str] | None) -> list[str] | None:
        unknown = sorted(set(v or ()) - set(NOTIFY_EVENTS))
        if unknown:
            raise ValueError(f"unknown event(s) {unknown}; events are {', '.join(NOTIFY_EVENTS)}")
        return v


class SmtpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65_535)
    sender: str = "ioc@localhost"
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    use_tls: bool = Field(default=False, description="implicit TLS (port 465)")
    timeout_s: float = Field(default=10.0, gt=0, le=120)


class QuietHours(_Section):
    """Low-priority notifications wait for the end of the window; critical ones never do."""

    enabled: bool = True
    start: dt_time = dt_time(22, 0)
    end: dt_time = dt_time(6, 0)
    timezone: str = "Asia/Ho_Chi_Minh"
    min_priority: int = Field(
        default=3, ge=1, le=9,
        description="alarm priorities from this number down (1 is the highest) are deferred")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}; use an IANA name such as "
                             "Asia/Ho_Chi_Minh") from None
        return v


class EscalationContact(_Section):
    level: int = Field(ge=2, le=9)
    name: str
    email: str | None = None
    webhook: str | None = None
    webhook_secret: str | None = None

    _secret = field_validator("webhook_secret")(_check_secret)

    @model_validator(mode="after")
    def _reachable(self) -> EscalationContact:
        if not (self.email or self.webhook):
            raise ValueError(f"escalation contact {self.name!r} needs an email or a webhook")
        return self


class EscalationSettings(_Section):
    enabled: bool = True
    ack_minutes: dict[Severity, float] = Field(
        default_factory=lambda: {"critical": 5, "major": 15, "minor": 60, "warning": 240},
        description="minutes an alarm may stay unacknowledged before the next level is told")
    max_level: int = Field(default=3, ge=1, le=9)
    check_interval_s: float = Field(default=5.0, gt=0, le=300)
    contacts: list[EscalationContact] = []

    @field_validator("ack_minutes")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: m for k, m in v.items() if not m > 0}
        if bad:
            raise ValueError(f"acknowledgement deadlines must be positive minutes, got {bad}")
        return v


class NotifySettings(_Section):
    webhooks: list[WebhookChannel] = []
    smtp: SmtpSettings | None = None
    channel_order: list[Channel] = Field(
        default_factory=lambda: ["webhook", "email", "crew"],
        description="a recipient's channels, tried in this order; the next after max_attempts")
    max_attempts: int = Field(default=5, ge=1, le=100, description="per channel, then fall back")
    backoff_initial_s: float = Field(default=5.0, gt=0, le=3600)
    backoff_max_s: float = Field(default=600.0, gt=0, le=86_400)
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=60, description="crews' webhooks")
    poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    batch_size: int = Field(default=50, ge=1, le=1000)
    concurrency: int = Field(default=20, ge=1, le=500)
    retention_days: int = Field(default=30, ge=1, le=3650, description="delivered rows kept")
    quiet_hours: QuietHours = QuietHours()
    escalation: EscalationSettings = EscalationSettings()

    @field_validator("channel_order")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError("channel_order lists each of webhook, email, crew at most once")
        return v

    @model_validator(mode="after")
    def _unique_webhooks(self) -> NotifySettings:
        names = [w.name for w in self.webhooks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"webhook names must be unique, repeated: {dupes}")
        return self


class CommandSettings(_Section):
    """Device commands: how long to wait for a device, how long to queue for an offline one."""

    timeout_s: float = Field(default=30.0, gt=0, le=3_600, description="wait for a device's result")
    ttl_s: float = Field(default=3_600.0, gt=0, le=7 * 86_400,
                         description="an offline device's command waits this long by default")
    max_ttl_s: float = Field(default=7 * 86_400.0, gt=0, description="the most a request may ask")
    mqtt_in_flight: int = Field(default=100, ge=1, le=10_000,
                                description="command publishes awaiting the broker's PUBACK")
    modbus_per_gateway: int = Field(default=1, ge=1, le=16,
                                    description="commands queued at once on one gateway's link")
    max_group: int = Field(default=100_000, ge=1, description="devices in one group command")


class SchedulesSettings(_Section):
    """``[schedules]``: lighting schedules (dimming profiles) and the scheduler that sends them."""

    enabled: bool = Field(default=True, description="send the schedules' steps as commands")
    timezone: str = Field(default="Asia/Ho_Chi_Minh",
                          description="the city's time zone: what 23:00 in a profile means")
    resolution_s: float = Field(default=60.0, ge=1, le=900, description=(
        "step times are floored to this: lamps whose dusk differs by seconds switch together, "
        "in one group command"))
    recheck_s: float = Field(default=60.0, gt=0, le=3600, description=(
        "how often schedules and devices changed by another process are looked for"))

    _zone = field_validator("timezone")(QuietHours._zone.__func__)  # type: ignore[attr-defined]


class IngestSettings(_Section):
    queue_size: int = Field(default=200_000, ge=100, description="readings held before backpressure")
    batch_max: int = Field(default=20_000, ge=1)
    batch_min: int = Field(default=500, ge=1, description=(
        "readings worth a commit of their own: fewer wait up to linger_ms for more"))
    linger_ms: int = Field(default=50, ge=0, le=5_000, description=(
        "longest a reading waits for batch_min others before it is committed"))
    retention_days: int = Field(default=400, ge=1, le=36_500, description=(
        "readings older than this are refused when they arrive ([storage] says how long "
        "each tier keeps them)"))
    future_tolerance_s: int = Field(default=300, ge=0)
    partitions_ahead_days: int = Field(default=3, ge=1, le=60)
    # Anyone who can reach the broker can send garbage: what it costs is bounded.
    dead_letter_max_kib: int = Field(default=4, ge=0, le=1024, description=(
        "payload bytes a dead letter keeps (KiB; the rest is cut, the row says how long it was)"))
    dead_letter_retention_days: int = Field(default=14, ge=1, le=3650,
                                            description="dead letters older than this are deleted")


class StorageSettings(_Section):
    """How telemetry is kept: closed days compressed, and how long each tier is kept."""

    compress_after_days: int = Field(default=1, ge=0, le=3650, description=(
        "a UTC day is compressed once this many days have passed since it ended"))
    compress_every_s: float = Field(default=3600.0, gt=0, le=86_400,
                                    description="how often the server looks for days to compress")
    raw_retention_days: int = Field(default=400, ge=1, le=36_500,
                                    description="raw points (row store and compressed) kept")
    hourly_retention_days: int = Field(default=1830, ge=0, le=36_500,
                                       description="hourly rollups kept (0: forever)")
    daily_retention_days: int = Field(default=0, ge=0, le=36_500,
                                      description="daily rollups kept (0: forever)")


def _check_networks(v: list[str]) -> list[str]:
    import ipaddress

    for n in v:
        try:
            ipaddress.ip_network(n, strict=False)
        except ValueError:
            raise ValueError(f"{n!r} is not an IP address or CIDR") from None
    return v


class SecuritySettings(_Section):
    """``[security]``: outbound requests, sign-in links and the pages' sessions."""

    allow_outbound: list[str] = Field(default=[], description=(
        "CIDRs that webhook and media URLs may reach although they are loopback, link-local, "
        "private or otherwise not public (e.g. [\"10.20.0.0/16\"] for an intranet ticketing "
        "system); everything public is always allowed"))
    sign_in_minutes: float = Field(default=15.0, gt=0, le=1440, description=(
        "how long the sign-in link `ioc demo` (and `ioc token link`) prints stays valid"))
    session_hours: float = Field(default=12.0, gt=0, le=24 * 90, description=(
        "how long a page's session lasts after signing in (never longer than its token)"))

    _networks = field_validator("allow_outbound")(_check_networks)


class HubSettings(_Section):
    """The websocket hub (``/api/v1/ws``): heartbeats and how far behind a client may fall."""

    heartbeat_s: float = Field(default=30.0, gt=0, le=3_600,
                               description="ping interval; no pong within half of it closes")
    slow_after_s: float = Field(default=10.0, gt=0, le=3_600,
                                description="a client whose oldest unsent message is older "
                                            "than this is disconnected (close code 1013)")
    max_queued: int = Field(default=10_000, ge=10,
                            description="unsent alarms/notifications before a client is "
                                        "disconnected as too slow (they are never dropped)")
    max_snapshot: int = Field(default=50_000, ge=1,
                              description="devices in one snapshot; more is truncated")
    max_snapshot_devices: int = Field(
        default=10_000, ge=1,
        description="a subscribed kind with more devices than this in the bbox comes as grid cells"
                    " with counts (snapshot \"cells\", then \"cells\" messages) instead of one entry"
                    " and one state message per device, as tiles do above [tiles] max_point_features")
    cells_refresh_s: float = Field(
        default=5.0, gt=0, le=3_600,
        description="how often the cells of an aggregated view are read again (sent when changed)")
    send_buffer_bytes: int | None = Field(
        default=None, ge=4096,
        description="SO_SNDBUF of websocket sockets: what a stalled client may hold in the "
                    "kernel (default: the kernel's autotuning)")
    relay: bool = Field(
        default=False,
        description="share live updates with the other server processes through the MQTT "
                    "broker, so each websocket client sees every process's updates (scale-out)")


class RateLimit(_Section):
    """A token bucket: ``rate_per_s`` sustained, up to ``burst`` at once."""

    rate_per_s: float = Field(gt=0)
    burst: int = Field(ge=1)


def _default_rate_limits() -> dict[str, RateLimit]:
    # Generous: a map opening a viewport pulls a few hundred tiles at once, and an
    # integrator's script may push telemetry in a tight loop. The limits stop a runaway
    # client, not normal use.
    return {
        "viewer": RateLimit(rate_per_s=100, burst=2000),
        "crew": RateLimit(rate_per_s=50, burst=1000),
        "operator": RateLimit(rate_per_s=100, burst=2000),
        "integrator": RateLimit(rate_per_s=200, burst=4000),
        "admin": RateLimit(rate_per_s=200, burst=4000),
    }


class ApiSettings(_Section):
    """Bounds on what one client may ask of the HTTP API."""

    rate_limit: bool = Field(default=True, description="per-token rate limits on /api/v1")
    rate_limits: dict[str, RateLimit] = Field(default_factory=_default_rate_limits)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024,
                                description="request bodies on ordinary endpoints")
    max_import_bytes: int = Field(default=256 * 1024 * 1024, ge=1024,
                                  description="request bodies of POST /api/v1/import")

    @field_validator("rate_limits")
    @classmethod
    def _known_roles(cls, v: dict[str, RateLimit]) -> dict[str, RateLimit]:
        unknown = sorted(set(v) - set(ROLES))
        if unknown:
            raise ValueError(f"unknown role(s) {unknown}; roles are {', '.join(ROLES)}")
        return {**_default_rate_limits(), **v}


# ---------------------------------------------------------------- the data directory
# Where the city's files live beside its database: the demo's PostgreSQL and broker, and the
# citizens' and crews' photos. ``--data-dir`` (any ``ioc`` command), else IOC_DATA_DIR, else
# the user's XDG data directory.

#: The data directory ``--data-dir`` named for this command (set by ``ioc``'s main), if any.
_chosen_data_dir: Path | None = None


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ioc"


def choose_data_dir(path: Path | None) -> None:
    """Remember the ``--data-dir`` of this command line (``None``: the environment decides)."""
    global _chosen_data_dir
    _chosen_data_dir = path


def data_dir() -> Path:
    """``--data-dir``, else ``IOC_DATA_DIR``, else the default."""
    chosen = _chosen_data_dir or os.environ.get("IOC_DATA_DIR") or default_data_dir()
    return Path(chosen).expanduser().resolve()


class ReportsSettings(_Section):
    """Citizens' reports: photo storage, SLAs and which unit answers a category in a ward."""

    # (a factory: the data directory is known only once the command line is read)
    photo_dir: Path = Field(default_factory=lambda: data_dir() / "report-photos", description=(
        "where report photos are kept, named by content hash (crews' photos go in work-photos "
        "beside it); default: report-photos in the data directory"))
    photo_quota_bytes: int = Field(default=2_000_000_000, ge=0,
                                   description="all photos together; past it uploads get 503")
    sla_hours: dict[str, float] = Field(default={"water_leak": 24.0}, description=(
        "hours to resolve per category (service_code); the others get default_sla_hours"))
    default_sla_hours: float = Field(default=72.0, gt=0)
    units: dict[str, str] = Field(default={}, description=(
        "responsible unit per 'category' or 'category/ward' (the latter wins); default 'crews'"))
    rate_per_min: float = Field(default=5.0, gt=0, description="reports per client address per minute")


class Settings(BaseSettings):
    """Every knob of one server process."""

    model_config = SettingsConfigDict(
        env_prefix="IOC_", env_nested_delimiter="__", extra="forbid", populate_by_name=True
    )

    database_url: str | None = Field(default=None, description="postgresql://user:pw@host:port/db")
    mqtt_url: str | None = Field(default=None, description="mqtt[s]://[user:password@]host:port")
    mqtt_ca_file: Path | None = Field(default=None, description="mqtts://: the CA that signed the "
                                      "broker's certificate (default: the system's CAs)")
    mqtt_cert_file: Path | None = Field(default=None, description="mqtts://: a client certificate")
    mqtt_key_file: Path | None = Field(default=None, description="mqtts://: its private key")
    mqtt_admin_file: Path | None = Field(
        default=None, description="JSON {username, password} of the broker's dynamic-security "
                                  "admin: devices created or deleted update the broker at once")
    mqtt_simulator_url: str | None = Field(
        default=None, description="the in-process simulator's own broker account (default: mqtt_url)")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65_535)
    http_trusted_proxies: list[str] = Field(
        default=[], description="addresses or CIDRs of the reverse proxies whose X-Forwarded-"
                                "Proto/Host/For are believed (from anyone else they are ignored)")
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop",
        description="uvloop (libuv) spends about a tenth less CPU per request than asyncio's own"
                    " loop; 'asyncio' is the fallback, and is used where uvloop is not installed")
    config: Path | None = Field(default=None, description="TOML file with the sections below")

    mqtt_client_id: str = Field(default="ioc-server", min_length=1, max_length=64)
    mqtt_shared_group: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[^/+#$\s]+$",
        description="several server processes share MQTT ingest: devices' topics are taken "
                    "through $share/<group>/... (give each process its own mqtt_client_id)")
    db_pool_min: int = Field(default=2, ge=1)
    db_pool_max: int = Field(default=10, ge=1)
    static_dir: Path | None = None
    web_style_url: str | None = Field(default=None, description="external basemap style (optional)")
    simulate: bool = Field(default=False, description="run the device simulator in-process")

    modbus: ModbusSettings = ModbusSettings()
    rules: RulesSettings = RulesSettings()
    notify: NotifySettings = NotifySettings()
    commands: CommandSettings = CommandSettings()
    schedules: SchedulesSettings = SchedulesSettings()
    ingest: IngestSettings = IngestSettings()
    storage: StorageSettings = StorageSettings()
    hub: HubSettings = HubSettings()
    tiles: TilesSettings = TilesSettings()
    api: ApiSettings = ApiSettings()
    reports: ReportsSettings = Field(default_factory=ReportsSettings)
    security: SecuritySettings = SecuritySettings()
    adapters: dict[str, dict[str, Any]] = {}
    sparkplug: SparkplugSettings = SparkplugSettings()

    @field_validator("http_trusted_proxies")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        import ipaddress

        for n in v:
            try:
                ipaddress.ip_network(n, strict=False)
            except ValueError:
                raise ValueError(f"{n!r} is not an IP address or CIDR") from None
        return v

    @field_validator("database_url")
    @classmethod
    def _pg_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql:// (e.g. postgresql://ioc@127.0.0.1:5432/ioc)")
        return v

    @field_validator("mqtt_url", "mqtt_simulator_url")
    @classmethod
    def _mqtt_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("mqtt://", "tcp://", "mqtts://")):
            raise ValueError("must look like mqtt://host:1883, mqtt://user:password@host:1883 "
                             "or mqtts://user:password@host:8883")
        return v

    @model_validator(mode="after")
    def _sparkplug_is_an_adapter(self) -> Settings:
        """The adapters are configured through ``adapters[kind]``; ``[sparkplug]`` is where
        the contract puts Sparkplug's, so what it sets goes there."""
        given = self.sparkplug.model_dump(exclude_unset=True)
        if given:
            self.adapters = {**self.adapters,
                             "sparkplug": {**self.adapters.get("sparkplug", {}), **given}}
        return self

    @model_validator(mode="after")
    def _pool_bounds(self) -> Settings:
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("db_pool_min must not exceed db_pool_max")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = getattr(init_settings, "init_kwargs", {}).get("config") or os.environ.get(
            "IOC_CONFIG"
        )
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path:
            sources.append(_TomlFile(settings_cls, Path(path)))
        return tuple(sources)


class ConfigFileError(Exception):
    """The TOML file is missing or not TOML; the message names the file and the line."""


class _TomlFile(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        try:
            with path.open("rb") as f:
                self._data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigFileError(f"IOC_CONFIG file {path} does not exist") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigFileError(f"{path}: not valid TOML: {err}") from None

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)



PositiveSeconds = Annotated[float, Field(gt=0)]
