"""devices: notify ioc_devices_deleted on commit of any deletion

The server reconciles the broker's device accounts when it hears it (server/mqtt/dynsec.py),
so a device deleted by another process (``ioc seed --replace``, ``ioc import`` without a
server, SQL by hand) loses its broker account at once, not at the server's next start.

Revision ID: 0009_devices_deleted_notify
Revises: 0008_telemetry_tiers
Create Date: 2026-12-05 01:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0009_devices_deleted_notify'
down_revision: str | None = '0008_telemetry_tiers'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One notification per statement (and PostgreSQL folds equal ones per transaction):
    # deleting 5,000 devices wakes the server once.
    op.execute("""
        create function ioc_devices_deleted() returns trigger language plpgsql as $$
        begin
            perform pg_notify('ioc_devices_deleted', '');
            return null;
        end $$
    """)
    op.execute("create trigger devices_deleted_notify after delete on devices "
               "for each statement execute function ioc_devices_deleted()")


def downgrade() -> None:
    op.execute("drop trigger if exists devices_deleted_notify on devices")
    op.execute("drop function if exists ioc_devices_deleted()")
