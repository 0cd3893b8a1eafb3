"""Logical replication (continuous mode): the replication connection to the master, slots and
their exported snapshots, WAL positions, the slave's subscription."""

from __future__ import annotations

import psycopg2
import psycopg2.extras
from psycopg2 import sql

from .session import DatabaseError, first_line, translated


def replication_connect(dsn: str, what: str, application: str):
    """A logical replication connection (replication=database): walsender commands only."""
    try:
        return psycopg2.connect(dsn, application_name=application,
                                connection_factory=psycopg2.extras.LogicalReplicationConnection)
    except psycopg2.Error as e:
        raise DatabaseError(f'cannot connect to {what}: {first_line(e)}') from None


@translated
def create_exported_slot(conn, slot: str) -> tuple[int, str]:
    """A logical slot (pgoutput) and the snapshot it starts from: every change after the
    snapshot is kept for the slot. The snapshot stays usable while `conn` stays open and idle.
    Returns (its consistent point in bytes, the snapshot's name)."""
    with conn.cursor() as cur:
        cur.execute(f"CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput (SNAPSHOT 'export')")
        _, point, snapshot, _ = cur.fetchone()
    return lsn_bytes(point), snapshot


@translated
def identify_system(conn) -> str:
    """The cluster's system identifier, over a replication connection (IDENTIFY_SYSTEM: no
    right beyond REPLICATION needed)."""
    with conn.cursor() as cur:
        cur.execute('IDENTIFY_SYSTEM')
        return str(cur.fetchone()[0])


def lsn_bytes(lsn: str) -> int:
    high, low = lsn.split('/')
    return (int(high, 16) << 32) + int(low, 16)


@translated
def use_snapshot(conn, snapshot: str) -> None:
    """This connection's transaction reads the exported snapshot (first statement)."""
    conn.set_session(isolation_level='REPEATABLE READ', readonly=True)
    with conn.cursor() as cur:
        cur.execute('SET TRANSACTION SNAPSHOT %s', (snapshot,))


@translated
def wal_position(cur) -> int:
    cur.execute("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
    return int(cur.fetchone()[0])


@translated
def slots(cur, prefix: str) -> dict[str, dict]:
    """Replication slots whose name starts with prefix: name -> active, wal_status, the WAL
    they hold back and their confirmed position (bytes)."""
    cur.execute("""
        SELECT slot_name, active, coalesce(wal_status, 'lost'),
               coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint,
               coalesce((confirmed_flush_lsn - '0/0'::pg_lsn)::bigint, 0)
        FROM pg_replication_slots WHERE starts_with(slot_name, %s)""", (prefix,))
    return {name: {'active': active, 'wal_status': status, 'retained': int(retained),
                   'confirmed': int(confirmed)}
            for name, active, status, retained, confirmed in cur.fetchall()}


@translated
def drop_slot(cur, name: str) -> None:
    cur.execute('SELECT pg_drop_replication_slot(%s)', (name,))


@translated
def subscription(cur, name: str) -> dict | None:
    """The subscription's state on this node, None when it does not exist."""
    cur.execute("""
        SELECT s.subenabled, s.subslotname, w.pid,
               coalesce(st.apply_error_count, 0) + coalesce(st.sync_error_count, 0),
               extract(epoch FROM w.latest_end_time),
               coalesce((o.remote_lsn - '0/0'::pg_lsn)::bigint, 0)
        FROM pg_subscription s
        LEFT JOIN pg_stat_subscription w ON w.subid = s.oid AND w.relid IS NULL
        LEFT JOIN pg_stat_subscription_stats st ON st.subid = s.oid
        LEFT JOIN pg_replication_origin_status o ON o.external_id = 'pg_' || s.oid
        WHERE s.subname = %s AND s.subdbid = (SELECT oid FROM pg_database
                                              WHERE datname = current_database())""", (name,))
    row = cur.fetchone()
    if row is None:
        return None
    enabled, slot, pid, errors, latest, applied = row
    return {'enabled': enabled, 'slot': slot, 'worker': pid, 'errors': int(errors),
            'latest_end_time': float(latest) if latest is not None else None,
            'applied': int(applied)}


@translated
def drop_subscription(cur, name: str) -> None:
    """Inside the current transaction: stop it and drop it, leaving its slot on the master
    (dropped there apart)."""
    ident = sql.Identifier(name)
    cur.execute(sql.SQL('ALTER SUBSCRIPTION {} DISABLE').format(ident))
    cur.execute(sql.SQL('ALTER SUBSCRIPTION {} SET (slot_name = NONE)').format(ident))
    cur.execute(sql.SQL('DROP SUBSCRIPTION {}').format(ident))


@translated
def create_subscription(cur, name: str, conninfo: str, publication: str, slot: str,
                        enabled: bool = True) -> None:
    """Inside the current transaction: subscribe on an existing slot, without a copy (the
    caller's copy is the starting point); an apply error disables it. Its table list is the
    one the publisher gives now (see subscription_relations)."""
    cur.execute(sql.SQL('CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH '
                        '(create_slot = false, slot_name = {}, copy_data = false, '
                        'enabled = {}, disable_on_error = true)').format(
        sql.Identifier(name), sql.Literal(conninfo), sql.Identifier(publication),
        sql.Literal(slot), sql.SQL('true' if enabled else 'false')))


@translated
def subscription_relations(cur, name: str) -> set[tuple[str, str]]:
    """(schema, table) of every relation the subscription applies changes to, whatever the
    schema."""
    cur.execute("""
        SELECT n.nspname, c.relname FROM pg_subscription_rel r
        JOIN pg_subscription s ON s.oid = r.srsubid
        JOIN pg_class c ON c.oid = r.srrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE s.subname = %s""", (name,))
    return {(schema, table) for schema, table in cur.fetchall()}


@translated
def subscription_owner(cur, name: str) -> str | None:
    cur.execute('SELECT subowner::regrole::text FROM pg_subscription WHERE subname = %s', (name,))
    row = cur.fetchone()
    return row[0].strip('"') if row else None


@translated
def give_subscription(cur, name: str, role: str) -> None:
    """Inside the current transaction, as a superuser: the subscription belongs to `role`,
    which is no superuser once the transaction commits (PostgreSQL 15 takes a superuser as
    new owner only; the apply worker then runs with the owner's rights)."""
    r = sql.Identifier(role)
    cur.execute(sql.SQL('ALTER ROLE {} SUPERUSER').format(r))
    cur.execute(sql.SQL('ALTER SUBSCRIPTION {} OWNER TO {}').format(sql.Identifier(name), r))
    cur.execute(sql.SQL('ALTER ROLE {} NOSUPERUSER').format(r))


@translated
def take_subscription(cur, pending: str, name: str) -> None:
    """Inside the current transaction, as its owner: the pending subscription becomes `name`
    and applies from the commit on."""
    cur.execute(sql.SQL('ALTER SUBSCRIPTION {} RENAME TO {}').format(sql.Identifier(pending),
                                                                     sql.Identifier(name)))
    cur.execute(sql.SQL('ALTER SUBSCRIPTION {} ENABLE').format(sql.Identifier(name)))


@translated
def subscription_exists(cur, name: str) -> bool:
    cur.execute('SELECT 1 FROM pg_subscription WHERE subname = %s', (name,))
    return cur.fetchone() is not None


@translated
def enable_subscription(cur, name: str) -> None:
    cur.execute(sql.SQL('ALTER SUBSCRIPTION {} ENABLE').format(sql.Identifier(name)))


@translated
def disable_subscription(cur, name: str) -> bool:
    """Stop applying; False when there is no such subscription or it was already stopped."""
    cur.execute('SELECT subenabled FROM pg_subscription WHERE subname = %s', (name,))
    row = cur.fetchone()
    if row is None or not row[0]:
        return False
    cur.execute(sql.SQL('ALTER SUBSCRIPTION {} DISABLE').format(sql.Identifier(name)))
    return True


@translated
def subscribed_tables(cur, subscription: str) -> set[str]:
    """The tables of the public schema the subscription applies changes to (on the slave)."""
    cur.execute("""
        SELECT c.relname FROM pg_subscription_rel r
        JOIN pg_subscription s ON s.oid = r.srsubid
        JOIN pg_class c ON c.oid = r.srrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE s.subname = %s AND n.nspname = 'public'""", (subscription,))
    return {name for name, in cur.fetchall()}


@translated
def subscription_setup(cur, name: str) -> tuple[str, str] | None:
    """(owner, conninfo) of the subscription, as a superuser reads them; None when missing."""
    cur.execute("""
        SELECT o.rolname, s.subconninfo FROM pg_catalog.pg_subscription s
        JOIN pg_catalog.pg_roles o ON o.oid = s.subowner
        WHERE s.subname = %s AND s.subdbid = (SELECT d.oid FROM pg_catalog.pg_database d
                                              WHERE d.datname = pg_catalog.current_database())""",
                (name,))
    row = cur.fetchone()
    return (row[0], row[1]) if row else None


@translated
def role_login(cur, role: str) -> tuple[bool, bool] | None:
    """(may log in, has a password) of the role, as a superuser reads them; None when missing."""
    cur.execute('SELECT rolcanlogin, rolpassword IS NOT NULL FROM pg_catalog.pg_authid '
                'WHERE rolname = %s', (role,))
    row = cur.fetchone()
    return (bool(row[0]), bool(row[1])) if row else None


@translated
def set_subscription_connection(cur, name: str, conninfo: str) -> None:
    """Inside the current transaction: the subscription connects with `conninfo` (its apply
    worker restarts with it)."""
    cur.execute(sql.SQL('ALTER SUBSCRIPTION {} CONNECTION {}').format(sql.Identifier(name),
                                                                      sql.Literal(conninfo)))


@translated
def restart_apply_worker(cur, name: str) -> int:
    """End the subscription's apply worker (as a superuser): the launcher starts it again, as
    the subscription's current owner. How many were ended."""
    cur.execute("""
        SELECT count(pg_catalog.pg_terminate_backend(w.pid))
        FROM pg_catalog.pg_stat_subscription w
        JOIN pg_catalog.pg_subscription s ON s.oid = w.subid
        WHERE s.subname = %s AND w.pid IS NOT NULL""", (name,))
    return int(cur.fetchone()[0])


@translated
def wal_level(cur) -> str:
    """The wal_level PostgreSQL runs with (a new value written takes effect at a restart)."""
    cur.execute('SHOW wal_level')
    return cur.fetchone()[0]


# one copy at a time into the slave's tables, whoever makes it: the master's fallback copy and
# the slave's hand-off take this transaction lock on the slave first (see stream.master)
COPY_LOCK = 0x77617a6f6861   # 'wazoha'


@translated
def copy_lock(cur) -> None:
    """In the slave's writing transaction: wait for any other copy into its tables to end."""
    cur.execute('SELECT pg_catalog.pg_advisory_xact_lock(%s)', (COPY_LOCK,))
