"""a report's submission key: a phone that sends again after a lost answer gets the same report

Revision ID: 0013_report_retries
Revises: 0012_schedules
Create Date: 2026-12-05 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013_report_retries'
down_revision: str | None = '0012_schedules'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('report_submissions',
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.Text(), nullable=False),
    sa.Column('code', sa.Text(), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['code'], ['report_codes.code'], name=op.f('fk_report_submissions_code_report_codes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_report_submissions'))
    )
    op.create_index('ix_report_submissions_at', 'report_submissions', ['at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_report_submissions_at', table_name='report_submissions')
    op.drop_table('report_submissions')
