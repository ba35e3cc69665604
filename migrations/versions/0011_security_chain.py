"""security: hash-chained audit_log and alarm_events; token kinds, expiry and parents

Each row of ``audit_log`` and ``alarm_events`` gets ``chain_seq`` (its place in its table's
chain), ``prev_hash`` (the previous row's hash) and ``hash`` = sha256(prev_hash || the row's
canonical text), set by a BEFORE INSERT trigger, so every writer (the API, the alarm engine,
the notifier, SQL by hand) is chained without knowing it. ``ioc audit verify``
(server/store/chain.py) recomputes the chain and names the first broken link.

Concurrent writers: the first chained insert of a transaction takes a transaction-level
advisory lock for the table and reads the head, later inserts of the same transaction
continue from a transaction-local setting; the lock is held to commit, so two transactions
never link to the same head. A unique index on chain_seq makes a fork (a REPEATABLE READ
transaction that could not see the newest head) fail instead of passing silently.

api_tokens: ``kind`` ('api', 'sign_in', 'session'), ``expires_at``, ``parent_id`` (a session's
token: revoking or deleting a token ends the sessions made from it). dead_letters:
``payload_size`` (the payload is kept cut to a few KiB; this says how long it was).

Revision ID: 0011_security_chain
Revises: 0010_reports
Create Date: 2026-12-05 02:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011_security_chain'
down_revision: str | None = '0010_reports'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS = "decode(repeat('00', 32), 'hex')"
# A copy of server/store/chain.py's ROW_TEXT as of this revision (a migration must not change
# when the code does). {p} is the row ("new." in the trigger), {seq} its chain_seq.
ROW_TEXT = {
    "audit_log": "jsonb_build_array({seq}, {p}id, {p}at at time zone 'UTC', {p}actor, {p}action, "
                 "{p}device, {p}target, {p}details)::text",
    "alarm_events": "jsonb_build_array({seq}, {p}id, {p}alarm_id, {p}at at time zone 'UTC', "
                    "{p}event, {p}actor, {p}reason, {p}details, {p}alarm)::text",
}
LOCK_KEY = {"audit_log": 0x10C_0101, "alarm_events": 0x10C_0102}

TRIGGER = """
create or replace function ioc_chain_{table}() returns trigger
language plpgsql as $$
declare
    head text := current_setting('ioc.chain_{table}', true);
    seq bigint;
    prev bytea;
begin
    if head is null or head = '' then
        -- Held to the end of the transaction: nobody else appends meanwhile, so the head read
        -- next (a fresh snapshot: this function is volatile) stays ours to extend.
        perform pg_advisory_xact_lock({lock});
        select t.chain_seq, t.hash into seq, prev from {table} t
        where t.chain_seq is not null order by t.chain_seq desc limit 1;
        if seq is null then
            seq := 0;
            prev := {genesis};
        end if;
    else
        seq := split_part(head, ':', 1)::bigint;
        prev := decode(split_part(head, ':', 2), 'hex');
    end if;
    new.chain_seq := seq + 1;
    new.prev_hash := prev;
    new.hash := sha256(prev || convert_to({row_text}, 'UTF8'));
    -- Transaction-local, and undone with a rolled-back savepoint (as the lock is).
    perform set_config('ioc.chain_{table}', new.chain_seq || ':' || encode(new.hash, 'hex'), true);
    return new;
end $$;

-- "zz": after every other BEFORE INSERT trigger (alarm_events_copy fills in new.alarm).
create trigger {table}_zz_chain before insert on {table}
for each row execute function ioc_chain_{table}();
"""

BACKFILL = """
do $$
declare
    r record;
    seq bigint := 0;
    prev bytea := {genesis};
begin
    for r in select * from {table} order by id loop
        seq := seq + 1;
        update {table} set chain_seq = seq, prev_hash = prev,
                           hash = sha256(prev || convert_to({row_text}, 'UTF8'))
        where id = r.id returning hash into prev;
    end loop;
end $$;
"""


def upgrade() -> None:
    op.add_column('dead_letters', sa.Column('payload_size', sa.Integer(), nullable=True))
    op.add_column('api_tokens', sa.Column('kind', sa.Text(), server_default=sa.text("'api'"),
                                          nullable=False))
    op.add_column('api_tokens', sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('api_tokens', sa.Column('parent_id', sa.Integer(), nullable=True))
    op.create_foreign_key(op.f('fk_api_tokens_parent_id_api_tokens'), 'api_tokens', 'api_tokens',
                          ['parent_id'], ['id'], ondelete='CASCADE')
    op.create_index('ix_api_tokens_parent_id', 'api_tokens', ['parent_id'], unique=False)
    op.create_check_constraint(op.f('ck_api_tokens_kind'), 'api_tokens',
                               "kind in ('api', 'sign_in', 'session')")
    for table, text in ROW_TEXT.items():
        op.add_column(table, sa.Column('chain_seq', sa.BigInteger(), nullable=True))
        op.add_column(table, sa.Column('prev_hash', sa.LargeBinary(), nullable=True))
        op.add_column(table, sa.Column('hash', sa.LargeBinary(), nullable=True))
        # Rows written before this revision join the chain in id order.
        op.execute(BACKFILL.format(table=table, genesis=GENESIS,
                                   row_text=text.format(p="r.", seq="seq")))
        op.create_index(f'ix_{table}_chain_seq', table, ['chain_seq'], unique=True)
        op.execute(TRIGGER.format(table=table, lock=LOCK_KEY[table], genesis=GENESIS,
                                  row_text=text.format(p="new.", seq="new.chain_seq")))


def downgrade() -> None:
    for table in ROW_TEXT:
        op.execute(f"drop trigger if exists {table}_zz_chain on {table}")
        op.execute(f"drop function if exists ioc_chain_{table}()")
        op.drop_index(f'ix_{table}_chain_seq', table_name=table)
        op.drop_column(table, 'hash')
        op.drop_column(table, 'prev_hash')
        op.drop_column(table, 'chain_seq')
    op.drop_constraint(op.f('ck_api_tokens_kind'), 'api_tokens', type_='check')
    op.drop_index('ix_api_tokens_parent_id', table_name='api_tokens')
    op.drop_constraint(op.f('fk_api_tokens_parent_id_api_tokens'), 'api_tokens',
                       type_='foreignkey')
    op.drop_column('api_tokens', 'parent_id')
    op.drop_column('api_tokens', 'expires_at')
    op.drop_column('api_tokens', 'kind')
    op.drop_column('dead_letters', 'payload_size')
