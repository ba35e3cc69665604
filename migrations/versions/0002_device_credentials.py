"""device MQTT credentials

Revision ID: 0002_device_credentials
Revises: 0001
Create Date: 2026-11-22 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002_device_credentials'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('device_credentials',
    sa.Column('device_id', sa.Text(), nullable=False),
    sa.Column('password_hash', sa.Text(), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('issued_by', sa.Text(), nullable=True),
    sa.CheckConstraint("password_hash like '$7$%'", name=op.f('ck_device_credentials_mosquitto_pbkdf2')),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_device_credentials_device_id_devices'), onupdate='CASCADE', ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_device_credentials'))
    )


def downgrade() -> None:
    op.drop_table('device_credentials')
