"""devices.merc_x, merc_y: stored Web Mercator coordinates for the tiles' grid aggregates

Revision ID: 0006_devices_mercator
Revises: 0005_device_state_next_check
Create Date: 2026-11-22 10:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# As in server/store/schema.py, frozen here: a migration must not change when the schema module does.
_ANCHOR = "case when GeometryType(geom) = 'POINT' then geom else ST_PointOnSurface(geom) end"
MERC_X = f"6378137.0 * radians(ST_X({_ANCHOR}))"
MERC_Y = (f"6378137.0 * ln(tan(pi() / 4 + radians(least(greatest(ST_Y({_ANCHOR}), -85.0511287798066),"
          " 85.0511287798066)) / 2))")

revision: str = '0006_devices_mercator'
down_revision: str | None = '0005_device_state_next_check'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Adding a stored generated column rewrites the table once (about a second per 100,000
    # devices).
    op.add_column('devices', sa.Column('merc_x', sa.Float(53), sa.Computed(MERC_X, persisted=True)))
    op.add_column('devices', sa.Column('merc_y', sa.Float(53), sa.Computed(MERC_Y, persisted=True)))


def downgrade() -> None:
    op.drop_column('devices', 'merc_y')
    op.drop_column('devices', 'merc_x')
