"""telemetry_segments (compressed closed days), telemetry_daily, telemetry_dirty + its trigger,
an index on telemetry_hourly.hour

Revision ID: 0008_telemetry_tiers
Revises: 0007_replay
Create Date: 2026-12-04 23:59:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008_telemetry_tiers'
down_revision: str | None = '0007_replay'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Readings for an hour that has already ended mark it (and so its day) for the next rollup.
# A statement trigger with a transition table: one set-based insert per COPY/INSERT batch, and
# a batch of current readings (the usual case) matches nothing. The rollup lags two minutes
# behind the hour, so a reading committed as its hour ends is either rolled up or marked.
DIRTY_TRIGGER = """
create or replace function ioc_mark_dirty_hours() returns trigger
language plpgsql as $$
begin
    insert into telemetry_dirty (hour)
    select distinct date_trunc('hour', ts) from new_rows
    where ts < date_trunc('hour', now())
    on conflict do nothing;
    return null;
end $$;

create trigger telemetry_dirty_hours after insert on telemetry
referencing new table as new_rows
for each statement execute function ioc_mark_dirty_hours();
"""


def upgrade() -> None:
    op.create_table('telemetry_segments',
    sa.Column('device_key', sa.Integer(), nullable=False),
    sa.Column('metric_id', sa.SmallInteger(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('ts_first', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ts_last', sa.DateTime(timezone=True), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('device_key', 'metric_id', 'day', name=op.f('pk_telemetry_segments'))
    )
    op.create_index('ix_telemetry_segments_day', 'telemetry_segments', ['day'], unique=False)
    # Already zstd-compressed: stored as is (out of line when large), never pglz'd again.
    op.execute("alter table telemetry_segments alter column data set storage external")
    op.create_table('telemetry_daily',
    sa.Column('device_key', sa.Integer(), nullable=False),
    sa.Column('metric_id', sa.SmallInteger(), nullable=False),
    sa.Column('day', sa.DateTime(timezone=True), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('sum', sa.Float(), nullable=False),
    sa.Column('min', sa.Float(), nullable=False),
    sa.Column('max', sa.Float(), nullable=False),
    sa.Column('last_ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_value', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('device_key', 'metric_id', 'day', name=op.f('pk_telemetry_daily'))
    )
    op.create_table('telemetry_dirty',
    sa.Column('hour', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('hour', name=op.f('pk_telemetry_dirty'))
    )
    op.execute(DIRTY_TRIGGER)
    op.create_index('ix_telemetry_hourly_hour', 'telemetry_hourly', ['hour'], unique=False,
                    postgresql_using='brin')


def downgrade() -> None:
    op.execute("drop trigger if exists telemetry_dirty_hours on telemetry")
    op.execute("drop function if exists ioc_mark_dirty_hours()")
    op.drop_index('ix_telemetry_hourly_hour', table_name='telemetry_hourly', postgresql_using='brin')
    op.drop_table('telemetry_dirty')
    op.drop_table('telemetry_daily')
    op.drop_index('ix_telemetry_segments_day', table_name='telemetry_segments')
    op.drop_table('telemetry_segments')
