"""reports: citizens' reports, their events, photos, ratings and tracking codes

Revision ID: 0010_reports
Revises: 0009_devices_deleted_notify
Create Date: 2026-12-05 01:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry

revision: str = '0010_reports'
down_revision: str | None = '0009_devices_deleted_notify'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, **kw) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), **kw)


def upgrade() -> None:
    op.create_geospatial_table(
        'reports',
        sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column('code', sa.Text(), nullable=False),
        sa.Column('category', sa.Text(), nullable=False),
        sa.Column('geom', Geometry(geometry_type='POINT', srid=4326, dimension=2, spatial_index=False,
                                   from_text='ST_GeomFromEWKT', name='geometry'), nullable=False),
        sa.Column('ward', sa.Text(), nullable=True),
        sa.Column('description', sa.Text(), nullable=False),
        sa.Column('contact', sa.Text(), nullable=True),
        sa.Column('status', sa.Text(), server_default=sa.text("'received'"), nullable=False),
        sa.Column('unit', sa.Text(), nullable=True),
        sa.Column('crew', sa.Text(), nullable=True),
        sa.Column('device', sa.Text(), nullable=True),
        sa.Column('alarm_id', sa.BigInteger(), nullable=True),
        sa.Column('reporters', sa.Integer(), server_default=sa.text('1'), nullable=False),
        _ts('created_at', server_default=sa.text('now()'), nullable=False),
        _ts('updated_at', server_default=sa.text('now()'), nullable=False),
        _ts('resolved_at', nullable=True),
        _ts('sla_due', nullable=False),
        sa.ForeignKeyConstraint(['crew'], ['crews.id'], name=op.f('fk_reports_crew_crews'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['alarm_id'], ['alarms.id'], name=op.f('fk_reports_alarm_id_alarms'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_reports')),
        sa.UniqueConstraint('code', name=op.f('uq_reports_code')),
    )
    op.create_geospatial_index('idx_reports_geom', 'reports', ['geom'], unique=False,
                               postgresql_using='gist', postgresql_ops={})
    op.create_index('ix_reports_status', 'reports', ['status'])
    op.create_index('ix_reports_created_at', 'reports', ['created_at'])
    op.create_table(
        'report_codes',
        sa.Column('code', sa.Text(), nullable=False),
        sa.Column('report_id', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['report_id'], ['reports.id'], name=op.f('fk_report_codes_report_id_reports'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('code', name=op.f('pk_report_codes')),
    )
    op.create_table(
        'report_events',
        sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column('report_id', sa.BigInteger(), nullable=False),
        _ts('at', server_default=sa.text('now()'), nullable=False),
        sa.Column('status', sa.Text(), nullable=False),
        sa.Column('note', sa.Text(), nullable=True),
        sa.Column('by', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['report_id'], ['reports.id'], name=op.f('fk_report_events_report_id_reports'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_report_events')),
    )
    op.create_index('ix_report_events_report_id', 'report_events', ['report_id'])
    op.create_table(
        'report_photos',
        sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column('report_id', sa.BigInteger(), nullable=False),
        sa.Column('sha256', sa.Text(), nullable=False),
        sa.Column('role', sa.Text(), server_default=sa.text("'before'"), nullable=False),
        sa.Column('bytes', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['report_id'], ['reports.id'], name=op.f('fk_report_photos_report_id_reports'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_report_photos')),
    )
    op.create_index('ix_report_photos_report_id', 'report_photos', ['report_id'])
    op.create_table(
        'report_ratings',
        sa.Column('report_id', sa.BigInteger(), nullable=False),
        sa.Column('stars', sa.SmallInteger(), nullable=False),
        sa.Column('comment', sa.Text(), nullable=True),
        _ts('at', server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['report_id'], ['reports.id'], name=op.f('fk_report_ratings_report_id_reports'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('report_id', name=op.f('pk_report_ratings')),
    )


def downgrade() -> None:
    for table in ('report_ratings', 'report_photos', 'report_events', 'report_codes'):
        op.drop_table(table)
    op.drop_geospatial_index('idx_reports_geom', table_name='reports', postgresql_using='gist',
                             column_name='geom')
    op.drop_geospatial_table('reports')
