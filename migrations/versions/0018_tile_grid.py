"""tile_grid: device counts per (kind, grid level, cell), kept by triggers, so an aggregate tile
reads the cells it shows instead of counting every device under it; tile_grid_log holds the
changes not yet folded in

Revision ID: 0018_tile_grid
Revises: 0017_segment_tail
Create Date: 2026-12-05 16:30:00

A grid level is a tile zoom + 3 (8 × 8 cells per tile, tiles.catalogue.CELLS). A device's
cell at level 21 comes from its stored Web Mercator coordinates (``ioc_grid_x/y``); its cell at
any coarser level is that number shifted right, so every level nests exactly and the direct
count (tiles.sql.DEVICE_CELLS) and the grid (DEVICE_GRID) put a device in the same cell.

The triggers only append to ``tile_grid_log`` (kind, level-19 cell, signed counts), so no
writer ever waits on a shared counter row; ``ioc_tile_grid_fold()`` (the tile service calls it
every few seconds) moves the log into ``tile_grid`` for levels 3-19 in one statement. A tile
reads its cells plus the log rows still unfolded, so it is exact at any moment.

- devices: insert (statement trigger, one grouped insert per COPY), move or change of kind
  (row trigger, only when kind or position changed), delete (BEFORE row trigger: the state row
  is still there to say which status the device counted under; the cascade then deletes it
  silently, as its own trigger finds the device gone); truncate rebuilds.
- device_state: insert (statement trigger: only the rows really inserted, also for the
  ingest's upsert), a status change (row trigger whose WHEN skips the ingest's online→online
  updates without calling any function), delete; truncate rebuilds.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0018_tile_grid'
down_revision: str | None = '0017_segment_tail'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# pi * 6378137: half the Web Mercator world; 2^21 cells across it at level 21.
FUNCTIONS = """
create or replace function ioc_grid_x(merc_x float8) returns int
language sql immutable parallel safe as $$
  select least(greatest(floor((merc_x + 20037508.342789244) * (2097152 / 40075016.68557849))::int, 0), 2097151)
$$;
create or replace function ioc_grid_y(merc_y float8) returns int
language sql immutable parallel safe as $$
  select least(greatest(floor((20037508.342789244 - merc_y) * (2097152 / 40075016.68557849))::int, 0), 2097151)
$$;

-- One device's contribution, signed: its level-19 cell, its status, its position in cm.
create or replace function ioc_tile_grid_note(kind text, mx float8, my float8, status text, sign int)
returns void language sql as $$
  insert into tile_grid_log (kind, fx, fy, n, online, stale, offline, unknown, sx, sy)
  values (kind, ioc_grid_x(mx) >> 2, ioc_grid_y(my) >> 2, sign,
          case when status = 'online' then sign else 0 end,
          case when status = 'stale' then sign else 0 end,
          case when status = 'offline' then sign else 0 end,
          case when coalesce(status, 'unknown') = 'unknown' then sign else 0 end,
          sign * round(mx * 100)::bigint, sign * round(my * 100)::bigint)
$$;

create or replace function ioc_tile_grid_devices_added() returns trigger
language plpgsql as $$
begin
  insert into tile_grid_log (kind, fx, fy, n, online, stale, offline, unknown, sx, sy)
  select d.kind, ioc_grid_x(d.merc_x) >> 2, ioc_grid_y(d.merc_y) >> 2, count(*),
         count(*) filter (where s.status = 'online'), count(*) filter (where s.status = 'stale'),
         count(*) filter (where s.status = 'offline'),
         count(*) filter (where coalesce(s.status, 'unknown') = 'unknown'),
         sum(round(d.merc_x * 100)::bigint), sum(round(d.merc_y * 100)::bigint)
  from new_devices d left join device_state s on s.device_key = d.key
  group by 1, 2, 3;
  return null;
end $$;

create or replace function ioc_tile_grid_device_moved() returns trigger
language plpgsql as $$
declare st text := (select status from device_state where device_key = new.key);
begin
  perform ioc_tile_grid_note(old.kind, old.merc_x, old.merc_y, st, -1);
  perform ioc_tile_grid_note(new.kind, new.merc_x, new.merc_y, st, 1);
  return null;
end $$;

create or replace function ioc_tile_grid_device_removed() returns trigger
language plpgsql as $$
begin
  perform ioc_tile_grid_note(old.kind, old.merc_x, old.merc_y,
                             (select status from device_state where device_key = old.key), -1);
  return old;
end $$;

create or replace function ioc_tile_grid_states_added() returns trigger
language plpgsql as $$
begin
  insert into tile_grid_log (kind, fx, fy, n, online, stale, offline, unknown, sx, sy)
  select d.kind, ioc_grid_x(d.merc_x) >> 2, ioc_grid_y(d.merc_y) >> 2, 0,
         count(*) filter (where s.status = 'online'), count(*) filter (where s.status = 'stale'),
         count(*) filter (where s.status = 'offline'), -count(*), 0, 0
  from new_states s join devices d on d.key = s.device_key
  where s.status <> 'unknown'
  group by 1, 2, 3;
  return null;
end $$;

create or replace function ioc_tile_grid_state_changed() returns trigger
language plpgsql as $$
declare d record;
begin
  select kind, merc_x, merc_y into d from devices
  where key = coalesce(new.device_key, old.device_key);
  if not found then
    return null;  -- the device itself is being deleted: its trigger counted it out
  end if;
  perform ioc_tile_grid_note(d.kind, d.merc_x, d.merc_y,
                             case when tg_op = 'INSERT' then 'unknown' else old.status end, -1);
  perform ioc_tile_grid_note(d.kind, d.merc_x, d.merc_y,
                             case when tg_op = 'DELETE' then 'unknown' else new.status end, 1);
  return null;
end $$;

-- Fold the log into the grid, levels 3 (z0 tiles) to 19 (z16 tiles), in one statement. One
-- folder at a time (a try lock: a second caller returns at once; tiles read the log meanwhile).
-- Returns the number of grid rows changed.
create or replace function ioc_tile_grid_fold() returns bigint
language plpgsql as $$
declare changed bigint;
begin
  if not pg_try_advisory_xact_lock(7361402519) then
    return 0;
  end if;
  with d as (
    delete from tile_grid_log returning *
  ), f as (
    select kind, fx, fy, sum(n) as n, sum(online) as online, sum(stale) as stale,
           sum(offline) as offline, sum(unknown) as unknown, sum(sx) as sx, sum(sy) as sy
    from d group by kind, fx, fy
  )
  insert into tile_grid as g (kind, level, cx, cy, n, online, stale, offline, unknown, sx, sy)
  select f.kind, l, f.fx >> (19 - l), f.fy >> (19 - l), sum(f.n), sum(f.online), sum(f.stale),
         sum(f.offline), sum(f.unknown), sum(f.sx), sum(f.sy)
  from f cross join generate_series(3, 19) as l
  group by 1, 2, 3, 4
  having sum(f.n) <> 0 or sum(f.online) <> 0 or sum(f.stale) <> 0 or sum(f.offline) <> 0
      or sum(f.unknown) <> 0 or sum(f.sx) <> 0 or sum(f.sy) <> 0
  on conflict (kind, level, cx, cy) do update set
    n = g.n + excluded.n, online = g.online + excluded.online, stale = g.stale + excluded.stale,
    offline = g.offline + excluded.offline, unknown = g.unknown + excluded.unknown,
    sx = g.sx + excluded.sx, sy = g.sy + excluded.sy;
  get diagnostics changed = row_count;
  return changed;
end $$;

-- The grid from scratch (after a truncate, or to check the triggers): every device once.
create or replace function ioc_tile_grid_rebuild() returns void
language plpgsql as $$
begin
  perform pg_advisory_xact_lock(7361402519);
  delete from tile_grid_log;
  delete from tile_grid;
  insert into tile_grid_log (kind, fx, fy, n, online, stale, offline, unknown, sx, sy)
  select d.kind, ioc_grid_x(d.merc_x) >> 2, ioc_grid_y(d.merc_y) >> 2, count(*),
         count(*) filter (where s.status = 'online'), count(*) filter (where s.status = 'stale'),
         count(*) filter (where s.status = 'offline'),
         count(*) filter (where coalesce(s.status, 'unknown') = 'unknown'),
         sum(round(d.merc_x * 100)::bigint), sum(round(d.merc_y * 100)::bigint)
  from devices d left join device_state s on s.device_key = d.key
  group by 1, 2, 3;
end $$;

create or replace function ioc_tile_grid_truncated() returns trigger
language plpgsql as $$
begin
  perform ioc_tile_grid_rebuild();
  return null;
end $$;

create trigger tile_grid_devices_added after insert on devices
  referencing new table as new_devices for each statement
  execute function ioc_tile_grid_devices_added();
create trigger tile_grid_device_moved after update of geom, kind on devices for each row
  when (old.kind is distinct from new.kind or old.merc_x is distinct from new.merc_x
        or old.merc_y is distinct from new.merc_y)
  execute function ioc_tile_grid_device_moved();
create trigger tile_grid_device_removed before delete on devices for each row
  execute function ioc_tile_grid_device_removed();
create trigger tile_grid_devices_truncated after truncate on devices for each statement
  execute function ioc_tile_grid_truncated();
create trigger tile_grid_states_added after insert on device_state
  referencing new table as new_states for each statement
  execute function ioc_tile_grid_states_added();
create trigger tile_grid_state_changed after update of status on device_state for each row
  when (old.status is distinct from new.status)
  execute function ioc_tile_grid_state_changed();
create trigger tile_grid_state_removed after delete on device_state for each row
  when (old.status <> 'unknown')
  execute function ioc_tile_grid_state_changed();
create trigger tile_grid_states_truncated after truncate on device_state for each statement
  execute function ioc_tile_grid_truncated();
"""

DROP = """
drop trigger if exists tile_grid_devices_added on devices;
drop trigger if exists tile_grid_device_moved on devices;
drop trigger if exists tile_grid_device_removed on devices;
drop trigger if exists tile_grid_devices_truncated on devices;
drop trigger if exists tile_grid_states_added on device_state;
drop trigger if exists tile_grid_state_changed on device_state;
drop trigger if exists tile_grid_state_removed on device_state;
drop trigger if exists tile_grid_states_truncated on device_state;
drop function if exists ioc_tile_grid_truncated();
drop function if exists ioc_tile_grid_rebuild();
drop function if exists ioc_tile_grid_fold();
drop function if exists ioc_tile_grid_state_changed();
drop function if exists ioc_tile_grid_states_added();
drop function if exists ioc_tile_grid_device_removed();
drop function if exists ioc_tile_grid_device_moved();
drop function if exists ioc_tile_grid_devices_added();
drop function if exists ioc_tile_grid_note(text, float8, float8, text, int);
drop function if exists ioc_grid_y(float8);
drop function if exists ioc_grid_x(float8);
"""


def _counts() -> list[sa.Column]:
    return [sa.Column(name, sa.Integer(), nullable=False)
            for name in ('n', 'online', 'stale', 'offline', 'unknown')] + [
        sa.Column('sx', sa.BigInteger(), nullable=False),
        sa.Column('sy', sa.BigInteger(), nullable=False)]


def upgrade() -> None:
    op.create_table('tile_grid',
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('level', sa.SmallInteger(), nullable=False),
    sa.Column('cx', sa.Integer(), nullable=False),
    sa.Column('cy', sa.Integer(), nullable=False),
    *_counts(),
    sa.PrimaryKeyConstraint('kind', 'level', 'cx', 'cy', name=op.f('pk_tile_grid'))
    )
    op.create_table('tile_grid_log',
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('fx', sa.Integer(), nullable=False),
    sa.Column('fy', sa.Integer(), nullable=False),
    *_counts(),
    )
    op.execute(FUNCTIONS)
    op.execute("select ioc_tile_grid_rebuild(); select ioc_tile_grid_fold();")


def downgrade() -> None:
    op.execute(DROP)
    op.drop_table('tile_grid_log')
    op.drop_table('tile_grid')
