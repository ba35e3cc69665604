"""alarms.context: what the alarm is about as data (rule kind, metric, value, limit, unit),
so clients word the message in the operator's language instead of showing the English text

Revision ID: 0014_alarm_context
Revises: 0013_report_retries
Create Date: 2026-12-05 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0014_alarm_context'
down_revision: str | None = '0013_report_retries'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('alarms', sa.Column('context', postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column('alarms', 'context')
