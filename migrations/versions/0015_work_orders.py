"""work orders: inspections and work (pruning, removal) on a device such as a tree

Revision ID: 0015_work_orders
Revises: 0014_alarm_context
Create Date: 2026-12-05 10:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0015_work_orders'
down_revision: str | None = '0014_alarm_context'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, **kw) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), **kw)


def upgrade() -> None:
    op.create_table(
        'work_orders',
        sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column('device', sa.Text(), nullable=False),
        sa.Column('type', sa.Text(), nullable=False),
        sa.Column('status', sa.Text(), server_default=sa.text("'open'"), nullable=False),
        sa.Column('crew', sa.Text(), nullable=True),
        sa.Column('note', sa.Text(), nullable=True),
        sa.Column('created_by', sa.Text(), nullable=True),
        _ts('created_at', server_default=sa.text('now()'), nullable=False),
        _ts('updated_at', server_default=sa.text('now()'), nullable=False),
        _ts('done_at', nullable=True),
        sa.CheckConstraint("type in ('inspection', 'pruning', 'removal')",
                           name=op.f('ck_work_orders_type')),
        sa.CheckConstraint("status in ('open', 'in_progress', 'done')", name=op.f('ck_work_orders_status')),
        sa.ForeignKeyConstraint(['device'], ['devices.id'], name=op.f('fk_work_orders_device_devices'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['crew'], ['crews.id'], name=op.f('fk_work_orders_crew_crews'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_work_orders')),
    )
    op.create_index('ix_work_orders_device', 'work_orders', ['device'])
    op.create_index('ix_work_orders_crew', 'work_orders', ['crew'])
    op.create_table(
        'work_order_events',
        sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column('work_order_id', sa.BigInteger(), nullable=False),
        _ts('at', server_default=sa.text('now()'), nullable=False),
        sa.Column('status', sa.Text(), nullable=False),
        sa.Column('note', sa.Text(), nullable=True),
        sa.Column('photo', sa.Text(), nullable=True),
        sa.Column('by', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['work_order_id'], ['work_orders.id'],
                                name=op.f('fk_work_order_events_work_order_id_work_orders'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_work_order_events')),
    )
    op.create_index('ix_work_order_events_work_order_id', 'work_order_events', ['work_order_id'])


def downgrade() -> None:
    op.drop_table('work_order_events')
    op.drop_table('work_orders')
