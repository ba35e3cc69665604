"""rule history: every change of a rule, who made it and the document before and after

Revision ID: 0016_rule_history
Revises: 0015_work_orders
Create Date: 2026-12-05 10:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0016_rule_history'
down_revision: str | None = '0015_work_orders'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('rule_history',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('rule_id', sa.Text(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('action', sa.Text(), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('before', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('after', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rule_history'))
    )
    op.create_index('ix_rule_history_rule_id_id', 'rule_history', ['rule_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_rule_history_rule_id_id', table_name='rule_history')
    op.drop_table('rule_history')
