"""alarm_events.alarm: the alarm as it was after each event (replay and state?at=)

Every alarm write path (the engine's persister, operators' actions, the notifier's
escalations and delivery failures) inserts an alarm_events row after updating the alarm, so
a BEFORE INSERT trigger that copies the alarm row into the event records, for each event,
the alarm as it then stood, whichever code path wrote it. Events written before this
migration have no copy; readers fall back to folding the event names (docs/api.md says how).

Revision ID: 0007_replay
Revises: 0006_devices_mercator
Create Date: 2026-12-04 23:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0007_replay'
down_revision: str | None = '0006_devices_mercator'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGER = """
create or replace function ioc_alarm_event_copy() returns trigger
language plpgsql as $$
begin
    if new.alarm is null then
        select to_jsonb(a) - 'geom' into new.alarm from alarms a where a.id = new.alarm_id;
    end if;
    return new;
end $$;

create trigger alarm_events_copy before insert on alarm_events
for each row execute function ioc_alarm_event_copy();
"""


def upgrade() -> None:
    op.add_column('alarm_events', sa.Column('alarm', postgresql.JSONB(astext_type=sa.Text()),
                                            nullable=True))
    op.create_index('ix_alarm_events_at', 'alarm_events', ['at'], unique=False)
    op.execute(TRIGGER)


def downgrade() -> None:
    op.execute("drop trigger if exists alarm_events_copy on alarm_events")
    op.execute("drop function if exists ioc_alarm_event_copy()")
    op.drop_index('ix_alarm_events_at', table_name='alarm_events')
    op.drop_column('alarm_events', 'alarm')
