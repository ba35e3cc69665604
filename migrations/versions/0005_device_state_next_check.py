"""device_state.next_check: the staleness scan reads only devices whose time has come

Revision ID: 0005_device_state_next_check
Revises: 0004_alarm_chattering
Create Date: 2026-11-22 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005_device_state_next_check'
down_revision: str | None = '0004_alarm_chattering'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('device_state', sa.Column('next_check', sa.DateTime(timezone=True), nullable=True))
    # Every watched device is due once; the first scan then sets its real deadline.
    op.execute("update device_state set next_check = now() "
               "where status in ('online', 'stale') and last_seen is not null")
    op.create_index('ix_device_state_next_check', 'device_state', ['next_check'], unique=False,
                    postgresql_where=sa.text('next_check is not null'))


def downgrade() -> None:
    op.drop_index('ix_device_state_next_check', table_name='device_state',
                  postgresql_where=sa.text('next_check is not null'))
    op.drop_column('device_state', 'next_check')
