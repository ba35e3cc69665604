"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 03:25:58.882163
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("create extension if not exists postgis")
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('action', sa.Text(), nullable=False),
    sa.Column('device', sa.Text(), nullable=True),
    sa.Column('target', sa.Text(), nullable=True),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    op.create_index('ix_audit_log_actor', 'audit_log', ['actor'], unique=False)
    op.create_index('ix_audit_log_at', 'audit_log', ['at'], unique=False)
    op.create_index('ix_audit_log_device', 'audit_log', ['device'], unique=False)
    op.create_table('commands',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('device', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('args', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('status', sa.Text(), server_default=sa.text("'pending'"), nullable=False),
    sa.Column('group_id', sa.UUID(), nullable=True),
    sa.Column('requested_by', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('result', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.CheckConstraint("status in ('pending', 'sent', 'succeeded', 'failed', 'expired')", name=op.f('ck_commands_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_commands'))
    )
    op.create_index('ix_commands_device', 'commands', ['device'], unique=False)
    op.create_index('ix_commands_group_id', 'commands', ['group_id'], unique=False)
    op.create_geospatial_table('crews',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('ward', sa.Text(), nullable=True),
    sa.Column('location', Geometry(geometry_type='POINT', srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry'), nullable=True),
    sa.Column('available', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('escalation_level', sa.SmallInteger(), server_default=sa.text('1'), nullable=False),
    sa.Column('contacts', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_crews'))
    )
    op.create_geospatial_index('idx_crews_location', 'crews', ['location'], unique=False, postgresql_using='gist', postgresql_ops={})
    op.create_table('dead_letters',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('device_id', sa.Text(), nullable=True),
    sa.Column('topic', sa.Text(), nullable=True),
    sa.Column('field', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letters'))
    )
    op.create_index('ix_dead_letters_received_at', 'dead_letters', ['received_at'], unique=False)
    op.create_table('ioc_meta',
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('value', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_ioc_meta'))
    )
    op.create_table('kinds',
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('label_en', sa.Text(), nullable=False),
    sa.Column('label_vi', sa.Text(), nullable=False),
    sa.Column('metrics', postgresql.ARRAY(sa.Text()), nullable=True),
    sa.Column('expected_interval_s', sa.Integer(), server_default=sa.text('60'), nullable=False),
    sa.PrimaryKeyConstraint('kind', name=op.f('pk_kinds'))
    )
    op.create_table('metrics',
    sa.Column('id', sa.SmallInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('unit', sa.Text(), nullable=True),
    sa.Column('value_type', sa.Text(), server_default=sa.text("'number'"), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.CheckConstraint("name ~ '^[a-z][a-z0-9_]*$'", name=op.f('ck_metrics_snake_case')),
    sa.CheckConstraint("value_type in ('number', 'bool')", name=op.f('ck_metrics_value_type')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_metrics')),
    sa.UniqueConstraint('name', name=op.f('uq_metrics_name'))
    )
    op.create_geospatial_table('roads',
    sa.Column('id', sa.Integer(), sa.Identity(always=False), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('class', sa.Text(), nullable=False),
    sa.Column('geom', Geometry(geometry_type='LINESTRING', srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_roads'))
    )
    op.create_geospatial_index('idx_roads_geom', 'roads', ['geom'], unique=False, postgresql_using='gist', postgresql_ops={})
    op.create_table('rules',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('document', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('source', sa.Text(), server_default=sa.text("'api'"), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rules'))
    )
    op.create_table('telemetry',
    sa.Column('device_key', sa.Integer(), nullable=False),
    sa.Column('metric_id', sa.SmallInteger(), nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('quality', sa.SmallInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('device_key', 'metric_id', 'ts', name=op.f('pk_telemetry')),
    postgresql_partition_by='RANGE (ts)'
    )
    op.create_table('telemetry_hourly',
    sa.Column('device_key', sa.Integer(), nullable=False),
    sa.Column('metric_id', sa.SmallInteger(), nullable=False),
    sa.Column('hour', sa.DateTime(timezone=True), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('sum', sa.Float(), nullable=False),
    sa.Column('min', sa.Float(), nullable=False),
    sa.Column('max', sa.Float(), nullable=False),
    sa.Column('last_ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_value', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('device_key', 'metric_id', 'hour', name=op.f('pk_telemetry_hourly'))
    )
    op.create_geospatial_table('wards',
    sa.Column('code', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('properties', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('geom', Geometry(srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_wards'))
    )
    op.create_geospatial_index('idx_wards_geom', 'wards', ['geom'], unique=False, postgresql_using='gist', postgresql_ops={})
    op.create_geospatial_table('alarms',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('rule', sa.Text(), nullable=False),
    sa.Column('device', sa.Text(), nullable=False),
    sa.Column('severity', sa.Text(), nullable=False),
    sa.Column('priority', sa.SmallInteger(), server_default=sa.text('3'), nullable=False),
    sa.Column('state', sa.Text(), server_default=sa.text("'active_unacked'"), nullable=False),
    sa.Column('active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('shelved_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('suppressed', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('out_of_service', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('raised_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('acked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('acked_by', sa.Text(), nullable=True),
    sa.Column('cleared_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('message', sa.Text(), server_default=sa.text("''"), nullable=False),
    sa.Column('geom', Geometry(srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry'), nullable=True),
    sa.Column('incident', sa.BigInteger(), nullable=True),
    sa.Column('assigned_crew', sa.Text(), nullable=True),
    sa.Column('work_state', sa.Text(), nullable=True),
    sa.Column('dedup_key', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("severity in ('critical', 'major', 'minor', 'warning')", name=op.f('ck_alarms_severity')),
    sa.CheckConstraint("state in ('active_unacked', 'active_acked', 'rtn_unacked', 'closed')", name=op.f('ck_alarms_state')),
    sa.ForeignKeyConstraint(['assigned_crew'], ['crews.id'], name=op.f('fk_alarms_assigned_crew_crews'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['incident'], ['alarms.id'], name=op.f('fk_alarms_incident_alarms'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alarms'))
    )
    op.create_geospatial_index('idx_alarms_geom', 'alarms', ['geom'], unique=False, postgresql_using='gist', postgresql_ops={})
    op.create_index('ix_alarms_device', 'alarms', ['device'], unique=False)
    op.create_index('ix_alarms_state', 'alarms', ['state'], unique=False)
    op.create_index('uq_alarms_open_rule_device', 'alarms', ['rule', 'device'], unique=True, postgresql_where=sa.text("state <> 'closed'"))
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), sa.Identity(always=False), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('role', sa.Text(), nullable=False),
    sa.Column('token_hash', sa.Text(), nullable=False),
    sa.Column('prefix', sa.Text(), nullable=False),
    sa.Column('crew', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("role in ('viewer', 'crew', 'operator', 'integrator', 'admin')", name=op.f('ck_api_tokens_role')),
    sa.ForeignKeyConstraint(['crew'], ['crews.id'], name=op.f('fk_api_tokens_crew_crews'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    op.create_geospatial_table('devices',
    sa.Column('key', sa.Integer(), sa.Identity(always=False), nullable=False),
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), server_default=sa.text("''"), nullable=False),
    sa.Column('geom', Geometry(srid=4326, dimension=2, spatial_index=False, from_text='ST_GeomFromEWKT', name='geometry', nullable=False), nullable=False),
    sa.Column('parent', sa.Text(), nullable=True),
    sa.Column('external_id', sa.Text(), nullable=True),
    sa.Column('ward', sa.Text(), nullable=True),
    sa.Column('properties', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('adapter', sa.Text(), nullable=True),
    sa.Column('adapter_config', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('expected_interval_s', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'", name=op.f('ck_devices_id_format')),
    sa.CheckConstraint('ST_IsValid(geom)', name=op.f('ck_devices_geom_valid')),
    sa.ForeignKeyConstraint(['kind'], ['kinds.kind'], name=op.f('fk_devices_kind_kinds')),
    sa.ForeignKeyConstraint(['parent'], ['devices.id'], name=op.f('fk_devices_parent_devices'), onupdate='CASCADE', ondelete='SET NULL', initially='DEFERRED', deferrable=True),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_devices')),
    sa.UniqueConstraint('external_id', name=op.f('uq_devices_external_id')),
    sa.UniqueConstraint('id', name=op.f('uq_devices_id'))
    )
    op.create_geospatial_index('idx_devices_geom', 'devices', ['geom'], unique=False, postgresql_using='gist', postgresql_ops={})
    op.create_index('ix_devices_kind', 'devices', ['kind'], unique=False)
    op.create_index('ix_devices_parent', 'devices', ['parent'], unique=False)
    op.create_index('ix_devices_ward', 'devices', ['ward'], unique=False)
    op.create_table('alarm_events',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('alarm_id', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('event', sa.Text(), nullable=False),
    sa.Column('actor', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.ForeignKeyConstraint(['alarm_id'], ['alarms.id'], name=op.f('fk_alarm_events_alarm_id_alarms'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alarm_events'))
    )
    op.create_index('ix_alarm_events_alarm_id', 'alarm_events', ['alarm_id'], unique=False)
    op.create_table('device_state',
    sa.Column('device_key', sa.Integer(), nullable=False),
    sa.Column('values', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('times', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('quality', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.Text(), server_default=sa.text("'unknown'"), nullable=False),
    sa.Column('status_changed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status in ('online', 'stale', 'offline', 'unknown')", name=op.f('ck_device_state_status')),
    sa.ForeignKeyConstraint(['device_key'], ['devices.key'], name=op.f('fk_device_state_device_key_devices'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('device_key', name=op.f('pk_device_state'))
    )
    op.create_table('notification_outbox',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('alarm_id', sa.BigInteger(), nullable=True),
    sa.Column('event', sa.Text(), nullable=False),
    sa.Column('channel', sa.Text(), nullable=False),
    sa.Column('target', sa.Text(), nullable=False),
    sa.Column('dedup_key', sa.Text(), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('status', sa.Text(), server_default=sa.text("'pending'"), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status in ('pending', 'delivered', 'failed', 'fallback')", name=op.f('ck_notification_outbox_status')),
    sa.ForeignKeyConstraint(['alarm_id'], ['alarms.id'], name=op.f('fk_notification_outbox_alarm_id_alarms'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_outbox'))
    )
    op.create_index('ix_notification_outbox_due', 'notification_outbox', ['next_attempt_at'], unique=False, postgresql_where=sa.text("status = 'pending'"))

    op.execute(TELEMETRY_FUNCTIONS)
    op.execute(WARD_TRIGGER)
    op.execute(STATE_FUNCTIONS)
    # Time-range scans (retention, rollups, backfill) use a tiny BRIN index; lookups by
    # device and metric use the primary key.
    op.execute("create index ix_telemetry_ts_brin on telemetry using brin (ts)")


def downgrade() -> None:
    op.execute("drop trigger if exists devices_ward on devices")
    op.execute("drop function if exists ioc_device_ward()")
    op.execute("drop function if exists ioc_newer(jsonb, jsonb, jsonb)")
    op.execute("drop function if exists ioc_ensure_telemetry_partition(date)")
    op.execute("drop function if exists ioc_drop_telemetry_partitions(timestamptz)")
    op.drop_index('ix_notification_outbox_due', table_name='notification_outbox', postgresql_where=sa.text("status = 'pending'"))
    op.drop_table('notification_outbox')
    op.drop_table('device_state')
    op.drop_index('ix_alarm_events_alarm_id', table_name='alarm_events')
    op.drop_table('alarm_events')
    op.drop_index('ix_devices_ward', table_name='devices')
    op.drop_index('ix_devices_parent', table_name='devices')
    op.drop_index('ix_devices_kind', table_name='devices')
    op.drop_geospatial_index('idx_devices_geom', table_name='devices', postgresql_using='gist', column_name='geom')
    op.drop_geospatial_table('devices')
    op.drop_table('api_tokens')
    op.drop_index('uq_alarms_open_rule_device', table_name='alarms', postgresql_where=sa.text("state <> 'closed'"))
    op.drop_index('ix_alarms_state', table_name='alarms')
    op.drop_index('ix_alarms_device', table_name='alarms')
    op.drop_geospatial_index('idx_alarms_geom', table_name='alarms', postgresql_using='gist', column_name='geom')
    op.drop_geospatial_table('alarms')
    op.drop_geospatial_index('idx_wards_geom', table_name='wards', postgresql_using='gist', column_name='geom')
    op.drop_geospatial_table('wards')
    op.drop_table('telemetry_hourly')
    op.drop_table('telemetry')
    op.drop_table('rules')
    op.drop_geospatial_index('idx_roads_geom', table_name='roads', postgresql_using='gist', column_name='geom')
    op.drop_geospatial_table('roads')
    op.drop_table('metrics')
    op.drop_table('kinds')
    op.drop_table('ioc_meta')
    op.drop_index('ix_dead_letters_received_at', table_name='dead_letters')
    op.drop_table('dead_letters')
    op.drop_geospatial_index('idx_crews_location', table_name='crews', postgresql_using='gist', column_name='location')
    op.drop_geospatial_table('crews')
    op.drop_index('ix_commands_group_id', table_name='commands')
    op.drop_index('ix_commands_device', table_name='commands')
    op.drop_table('commands')
    op.drop_index('ix_audit_log_device', table_name='audit_log')
    op.drop_index('ix_audit_log_at', table_name='audit_log')
    op.drop_index('ix_audit_log_actor', table_name='audit_log')
    op.drop_table('audit_log')


# Daily partitions of telemetry, named telemetry_pYYYYMMDD, bounds in UTC. Created ahead by
# the server's maintenance task and on demand by the ingest writer; an advisory lock makes
# concurrent creation by several server processes safe.
TELEMETRY_FUNCTIONS = """
create or replace function ioc_ensure_telemetry_partition(day date) returns text
language plpgsql as $$
declare
    part text := 'telemetry_p' || to_char(day, 'YYYYMMDD');
    lo timestamptz := day::timestamp at time zone 'UTC';
begin
    if to_regclass(part) is null then
        perform pg_advisory_xact_lock(hashtext(part));
        if to_regclass(part) is null then
            execute format(
                'create table %I partition of telemetry for values from (%L) to (%L)',
                part, lo, lo + interval '1 day');
        end if;
    end if;
    return part;
end $$;

create or replace function ioc_drop_telemetry_partitions(cutoff timestamptz) returns integer
language plpgsql as $$
declare
    part record;
    dropped integer := 0;
begin
    for part in
        select c.relname from pg_inherits i
        join pg_class c on c.oid = i.inhrelid
        where i.inhparent = 'telemetry'::regclass and c.relname ~ '^telemetry_p[0-9]{8}$'
    loop
        -- a partition whose whole day ends at or before the cutoff
        if (to_date(substr(part.relname, 12), 'YYYYMMDD')::timestamp at time zone 'UTC')
           + interval '1 day' <= cutoff then
            execute format('drop table %I', part.relname);
            dropped := dropped + 1;
        end if;
    end loop;
    return dropped;
end $$;
"""

# A device's ward is the ward polygon containing a point on its geometry; kept by a trigger
# so every write path (API, import, seed) agrees.
WARD_TRIGGER = """
create or replace function ioc_device_ward() returns trigger
language plpgsql as $$
begin
    new.ward := (
        select w.code from wards w
        where ST_Intersects(w.geom, ST_PointOnSurface(new.geom))
        order by w.code limit 1);
    return new;
end $$;

create trigger devices_ward before insert or update of geom on devices
for each row execute function ioc_device_ward();
"""

# device_state keeps, per metric, the value with the newest device timestamp: a reading
# that arrives late is stored in telemetry but never moves the latest state backwards.
STATE_FUNCTIONS = """
create or replace function ioc_newer(old_t jsonb, new_t jsonb, src jsonb) returns jsonb
language sql immutable parallel safe as $$
    select coalesce(jsonb_object_agg(e.key, e.value), '{}'::jsonb)
    from jsonb_each(src) e
    where coalesce((old_t ->> e.key)::bigint, -1) <= (new_t ->> e.key)::bigint
$$;
"""
