"""tile_grid: the row triggers write their change as one statement each

Revision ID: 0019_tile_grid_lean
Revises: 0018_tile_grid
Create Date: 2026-12-05 19:40:00

bench/tiles.py measured what keeping the grid (0018_tile_grid) adds to a mass change of 5,000
devices: +102 µs a device to a status change (530 ms against 19 ms without the triggers) and
+58 µs a device to a delete. Each row ran a lookup, then two calls of ``ioc_tile_grid_note``,
each its own insert planned and executed through SPI. Here each row trigger is one insert
of one signed row (the status it leaves and the one it enters in the same row: the fold sums
them anyway), so the counts are the same and the work per row is one statement.
``ioc_tile_grid_note``, which only the old triggers called, is dropped. Downgrade keeps these
functions: they count exactly as 0018's did, and 0018's own downgrade drops them by name.
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0019_tile_grid_lean'
down_revision: str | None = '0018_tile_grid'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTIONS = """
-- A status change or a state row deleted: leave the old status, enter the new one ('unknown'
-- for a deleted row, as for a null status). Nothing when the device itself is
-- being deleted: its own trigger counted it out.
create or replace function ioc_tile_grid_state_changed() returns trigger
language plpgsql as $$
declare
  was text := coalesce(old.status, 'unknown');
  now_ text := case when tg_op = 'DELETE' then 'unknown' else coalesce(new.status, 'unknown') end;
begin
  insert into tile_grid_log (kind, fx, fy, n, online, stale, offline, unknown, sx, sy)
  select d.kind, ioc_grid_x(d.merc_x) >> 2, ioc_grid_y(d.merc_y) >> 2, 0,
         (now_ = 'online')::int - (was = 'online')::int,
         (now_ = 'stale')::int - (was = 'stale')::int,
         (now_ = 'offline')::int - (was = 'offline')::int,
         (now_ = 'unknown')::int - (was = 'unknown')::int,
         0, 0
  from devices d where d.key = old.device_key;
  return null;
end $$;

-- A device deleted (BEFORE, while its state row still says what it counted under).
create or replace function ioc_tile_grid_device_removed() returns trigger
language plpgsql as $$
begin
  insert into tile_grid_log (kind, fx, fy, n, online, stale, offline, unknown, sx, sy)
  select old.kind, ioc_grid_x(old.merc_x) >> 2, ioc_grid_y(old.merc_y) >> 2, -1,
         -(s.status = 'online')::int, -(s.status = 'stale')::int, -(s.status = 'offline')::int,
         -(s.status = 'unknown')::int,
         -round(old.merc_x * 100)::bigint, -round(old.merc_y * 100)::bigint
  from (select coalesce((select status from device_state where device_key = old.key), 'unknown') as status) s;
  return old;
end $$;

-- A device moved or re-kinded: out of its old cell, into its new one, in one insert.
create or replace function ioc_tile_grid_device_moved() returns trigger
language plpgsql as $$
begin
  insert into tile_grid_log (kind, fx, fy, n, online, stale, offline, unknown, sx, sy)
  select m.kind, ioc_grid_x(m.x) >> 2, ioc_grid_y(m.y) >> 2, m.sign,
         m.sign * (s.status = 'online')::int, m.sign * (s.status = 'stale')::int,
         m.sign * (s.status = 'offline')::int,
         m.sign * (s.status = 'unknown')::int,
         m.sign * round(m.x * 100)::bigint, m.sign * round(m.y * 100)::bigint
  from (values (old.kind, old.merc_x, old.merc_y, -1), (new.kind, new.merc_x, new.merc_y, 1))
         as m(kind, x, y, sign),
       (select coalesce((select status from device_state where device_key = new.key), 'unknown') as status) s;
  return null;
end $$;
"""


def upgrade() -> None:
    op.execute(FUNCTIONS)
    op.execute("drop function if exists ioc_tile_grid_note(text, float8, float8, text, int)")


def downgrade() -> None:
    pass  # see the module's docstring
