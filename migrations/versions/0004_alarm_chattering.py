"""alarms.chattering: the alarm activated 3 or more times a minute (ISA-18.2)

Revision ID: 0004_alarm_chattering
Revises: 0003_command_groups
Create Date: 2026-11-22 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004_alarm_chattering'
down_revision: str | None = '0003_command_groups'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('alarms', sa.Column('chattering', sa.Boolean(), server_default=sa.text('false'),
                                      nullable=False))
    # Open incidents' children (suppressed by design) are looked up by incident.
    op.create_index('ix_alarms_incident', 'alarms', ['incident'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_alarms_incident', table_name='alarms')
    op.drop_column('alarms', 'chattering')
