"""command groups, and an index over open commands

Revision ID: 0003_command_groups
Revises: 0002_device_credentials
Create Date: 2026-11-22 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0003_command_groups'
down_revision: str | None = '0002_device_credentials'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('command_groups',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('args', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('target', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('requested_by', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('skipped', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_command_groups'))
    )
    op.create_index('ix_commands_open', 'commands', ['created_at'], unique=False,
                    postgresql_where=sa.text("status in ('pending', 'sent')"))


def downgrade() -> None:
    op.drop_index('ix_commands_open', table_name='commands',
                  postgresql_where=sa.text("status in ('pending', 'sent')"))
    op.drop_table('command_groups')
