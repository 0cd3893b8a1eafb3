"""The only SQL helper: connections and the catalog/content queries replication needs."""

from __future__ import annotations

import collections
import contextlib
import functools
import io
import logging
import os
import pwd
import threading
from dataclasses import dataclass

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from .errors import WazoHaError

logger = logging.getLogger('wazo-ha')

# the text form of every value must be the same on both nodes for fingerprints to compare
SESSION_SETTINGS = ("SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, YMD'; "
                    "SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; "
                    "SET bytea_output = 'hex'; SET client_encoding = 'UTF8'; "
                    "SET statement_timeout = 0; SET lock_timeout = '60s'")


class DatabaseError(WazoHaError):
    """A PostgreSQL connection or statement failed."""


class IntegrityViolation(DatabaseError):
    """A statement broke a constraint (a duplicate key, a dangling reference)."""


def _translated(function):
    """psycopg2's errors leave this module as DatabaseError, with the server's first line."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except psycopg2.IntegrityError as e:
            raise IntegrityViolation(first_line(e)) from None
        except psycopg2.Error as e:
            raise DatabaseError(first_line(e)) from None
    return wrapper


def connect(dsn: str, what: str, application: str = 'wazo-ha', **kwargs):
    try:
        conn = psycopg2.connect(dsn, application_name=application, **kwargs)
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute(SESSION_SETTINGS)
        conn.commit()
    except psycopg2.Error as e:
        raise DatabaseError(f'cannot connect to {what}: {first_line(e)}') from None
    return conn


@_translated
def cursor(conn):
    return conn.cursor()


@_translated
def read_snapshot(conn) -> None:
    """From the next statement on, this connection reads one consistent snapshot."""
    conn.set_session(isolation_level='REPEATABLE READ', readonly=True)


@_translated
def commit(conn) -> None:
    conn.commit()


@_translated
def rollback(conn) -> None:
    conn.rollback()


def close(conn) -> None:
    """Close, whatever state the connection is in (a broken one: the server rolls back)."""
    with contextlib.suppress(psycopg2.Error):
        conn.close()


# make a peer notice a client that vanished (killed, cut off) within about 30 s, so its open
# transaction is rolled back and its locks released without waiting hours for TCP
SESSION_TIMEOUTS = ('SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; '
                    'SET tcp_keepalives_count = 3; SET tcp_user_timeout = 30000')


@_translated
def end_other_sessions(conn, application: str) -> list[int]:
    """Set this session's keepalive timeouts, end every other session of `application`
    (what a killed or cut-off earlier run left), commit. Returns their pids."""
    with conn.cursor() as cur:
        cur.execute(SESSION_TIMEOUTS)
        # only this role's own sessions: a role that is not a superuser may end those alone
        cur.execute('SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity '
                    'WHERE application_name = %s AND usename = current_user '
                    'AND pid <> pg_backend_pid()', (application,))
        pids = [pid for pid, _ in cur.fetchall()]
    conn.commit()
    return pids


def first_line(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return ' '.join(text.splitlines()[0].split())


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]  # (column, type) in name order

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)


def _columns(table: Table) -> sql.Composed:
    return sql.SQL(', ').join(sql.Identifier(c) for c in table.column_names)


def _row_text(table: Table) -> sql.Composed:
    """A row's text form over the named columns: the same on both nodes whatever the
    physical column order (session settings fix the text of every type)."""
    return sql.SQL('ROW({})::text').format(_columns(table))


@_translated
def tables(cur) -> dict[str, Table]:
    """Ordinary and partitioned tables of the public schema with their columns."""
    cur.execute("""
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
          AND a.attgenerated = ''
        ORDER BY c.relname, a.attname""")
    found: dict[str, list] = {}
    for table, column, type_ in cur.fetchall():
        found.setdefault(table, []).append((column, type_))
    return {t: Table(t, tuple(cols)) for t, cols in found.items()}


@_translated
def primary_keys(cur) -> dict[str, tuple[str, ...]]:
    """table -> its primary key columns, for the tables of the public schema that have one."""
    cur.execute("""
        SELECT c.relname, array_agg(a.attname ORDER BY array_position(i.indkey, a.attnum))
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
        WHERE i.indisprimary AND n.nspname = 'public'
        GROUP BY c.relname""")
    return {table: tuple(cols) for table, cols in cur.fetchall()}


@_translated
def row_hashes(cur, table: Table, key: tuple[str, ...]) -> dict[tuple, tuple[int, int]]:
    """primary key -> a 128-bit hash of the row's text, for every row."""
    row = _row_text(table)
    cur.execute(sql.SQL('SELECT {}, hashtextextended({row}, 0), hashtextextended({row}, 1) '
                        'FROM {}').format(
        sql.SQL(', ').join(sql.SQL('{}::text').format(sql.Identifier(c)) for c in key),
        sql.Identifier(table.name), row=row))
    n = len(key)
    return {tuple(r[:n]): (r[n], r[n + 1]) for r in cur}


@_translated
def keys_since(cur, table: Table, key: tuple[str, ...], since: int,
               writer: int | None) -> tuple[set, set]:
    """Primary keys of every row, and of the rows written at or after the horizon `since`
    (32-bit xid) by another transaction than `writer`."""
    cond = sql.SQL('age(xmin) <= age({}::xid)').format(sql.Literal(str(since)))
    if writer is not None:
        cond = sql.SQL('{} AND NOT xmin = {}::xid').format(cond, sql.Literal(str(writer)))
    cur.execute(sql.SQL('SELECT {}, {} FROM {}').format(
        sql.SQL(', ').join(sql.SQL('{}::text').format(sql.Identifier(c)) for c in key),
        cond, sql.Identifier(table.name)))
    n = len(key)
    every, new = set(), set()
    for r in cur:
        k = tuple(r[:n])
        every.add(k)
        if r[n]:
            new.add(k)
    return every, new


def key_filter(table: Table, key: tuple[str, ...], keys) -> sql.Composed:
    """WHERE clause matching these primary key values (given as text)."""
    types = dict(table.columns)
    values = sql.SQL(', ').join(
        sql.SQL('({})').format(sql.SQL(', ').join(
            sql.SQL('{}::{}').format(sql.Literal(v), sql.SQL(types[c])) for c, v in zip(key, k)))
        for k in keys)
    return sql.SQL('({}) IN (VALUES {})').format(
        sql.SQL(', ').join(sql.Identifier(c) for c in key), values)


@dataclass(frozen=True)
class Index:
    """One index of a table, as the slave's write can drop and rebuild it."""
    table: str
    name: str                 # quoted: ready for DROP INDEX / DROP CONSTRAINT
    definition: str           # CREATE INDEX ..., or the constraint's definition
    constraint: bool          # backs a PRIMARY KEY or UNIQUE constraint of the table
    unique: bool
    movable: bool             # nothing but foreign keys rests on it: no comment, not
                              # clustered, not the replica identity, no exclusion constraint

    def drop(self) -> sql.Composed:
        if self.constraint:
            return sql.SQL('ALTER TABLE {} DROP CONSTRAINT {}').format(
                sql.Identifier(self.table), sql.SQL(self.name))
        return sql.SQL('DROP INDEX {}').format(sql.SQL(self.name))

    def create(self) -> sql.Composed:
        if self.constraint:
            return sql.SQL('ALTER TABLE {} ADD CONSTRAINT {} {}').format(
                sql.Identifier(self.table), sql.SQL(self.name), sql.SQL(self.definition))
        return sql.Composed([sql.SQL(self.definition)])


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key constraint pointing at a table of the public schema."""
    table: str                # the referencing table
    schema: str
    name: str                 # quoted
    definition: str
    references: str           # the referenced table (public schema)
    movable: bool             # no comment: dropping and adding it again loses nothing
    columns: tuple[str, ...] = ()        # referencing columns, in key order
    ref_columns: tuple[str, ...] = ()    # the referenced columns they match
    on_delete: str = 'a'      # pg_constraint.confdeltype: a, r, c, n (set null), d (default)
    set_columns: tuple[str, ...] = ()    # ON DELETE SET NULL/DEFAULT (columns): only these

    @property
    def source(self) -> str:
        """The referencing table, qualified when outside the public schema."""
        return self.table if self.schema == 'public' else f'{self.schema}.{self.table}'

    def drop(self) -> sql.Composed:
        return sql.SQL('ALTER TABLE {}.{} DROP CONSTRAINT {}').format(
            sql.Identifier(self.schema), sql.Identifier(self.table), sql.SQL(self.name))

    def create(self) -> sql.Composed:
        return sql.SQL('ALTER TABLE {}.{} ADD CONSTRAINT {} {}').format(
            sql.Identifier(self.schema), sql.Identifier(self.table), sql.SQL(self.name),
            sql.SQL(self.definition))


@_translated
def indexes(cur, tables: list[str]) -> list[Index]:
    """Every index of these public tables, with what rebuilding it takes."""
    cur.execute("""
        SELECT c.relname, quote_ident(coalesce(k.conname, ic.relname)), k.contype,
               coalesce(pg_get_constraintdef(k.oid), pg_get_indexdef(i.indexrelid)),
               i.indisunique,
               NOT i.indisclustered AND NOT i.indisreplident
               AND obj_description(i.indexrelid, 'pg_class') IS NULL
               AND (k.oid IS NULL OR (k.contype IN ('p', 'u')
                                      AND obj_description(k.oid, 'pg_constraint') IS NULL))
               AND NOT EXISTS (SELECT 1 FROM pg_depend d
                               WHERE d.refclassid = 'pg_class'::regclass
                                 AND d.refobjid = i.indexrelid
                                 AND d.classid <> 'pg_constraint'::regclass)
        FROM pg_index i
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_class c ON c.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid
                                  AND k.contype IN ('p', 'u', 'x')
        WHERE n.nspname = 'public' AND c.relname = ANY(%s)
        ORDER BY c.relname, ic.relname""", (list(tables),))
    return [Index(table, name, definition, contype in ('p', 'u'), unique, movable)
            for table, name, contype, definition, unique, movable in cur.fetchall()]


@_translated
def foreign_keys(cur) -> list[ForeignKey]:
    """Every foreign key pointing at a table of the public schema, from any schema."""
    cur.execute("""
        SELECT src.relname, sn.nspname, quote_ident(k.conname), pg_get_constraintdef(k.oid),
               dst.relname, obj_description(k.oid, 'pg_constraint') IS NULL,
               ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(n, o)
                     JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n
                     ORDER BY u.o),
               ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(n, o)
                     JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n
                     ORDER BY u.o),
               k.confdeltype,
               ARRAY(SELECT a.attname FROM unnest(k.confdelsetcols) WITH ORDINALITY u(n, o)
                     JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n
                     ORDER BY u.o)
        FROM pg_constraint k
        JOIN pg_class src ON src.oid = k.conrelid
        JOIN pg_namespace sn ON sn.oid = src.relnamespace
        JOIN pg_class dst ON dst.oid = k.confrelid
        JOIN pg_namespace dn ON dn.oid = dst.relnamespace
        WHERE k.contype = 'f' AND dn.nspname = 'public'
        ORDER BY src.relname, k.conname""")
    return [ForeignKey(*row[:6], tuple(row[6]), tuple(row[7]), row[8], tuple(row[9]))
            for row in cur.fetchall()]


@_translated
def clear_orphans(cur, key: ForeignKey) -> int:
    """Do to the rows breaking this foreign key (their parent row is gone) what its ON DELETE
    says: CASCADE deletes them, SET NULL / SET DEFAULT sets their columns (rows whose default
    has no parent either are then deleted), NO ACTION / RESTRICT: deleted. The number of rows."""
    table = sql.SQL('{}.{}').format(sql.Identifier(key.schema), sql.Identifier(key.table))
    orphan = sql.SQL('{} AND NOT EXISTS (SELECT 1 FROM public.{} p WHERE {})').format(
        sql.SQL(' AND ').join(sql.SQL('r.{} IS NOT NULL').format(sql.Identifier(c))
                              for c in key.columns),
        sql.Identifier(key.references),
        sql.SQL(' AND ').join(sql.SQL('p.{} = r.{}').format(sql.Identifier(p), sql.Identifier(c))
                              for c, p in zip(key.columns, key.ref_columns)))
    if key.on_delete in ('n', 'd'):
        value = sql.SQL('NULL' if key.on_delete == 'n' else 'DEFAULT')
        cur.execute(sql.SQL('UPDATE {} r SET {} WHERE {}').format(
            table, sql.SQL(', ').join(sql.SQL('{} = {}').format(sql.Identifier(c), value)
                                      for c in key.set_columns or key.columns), orphan))
        count = cur.rowcount
        if key.on_delete == 'd':
            cur.execute(sql.SQL('DELETE FROM {} r WHERE {}').format(table, orphan))
        return count
    cur.execute(sql.SQL('DELETE FROM {} r WHERE {}').format(table, orphan))
    return cur.rowcount


@_translated
def owned_sequences(cur) -> dict[str, str]:
    """sequence name -> the table that owns it (serial and identity columns)."""
    cur.execute("""
        SELECT s.relname, t.relname
        FROM pg_class s
        JOIN pg_namespace n ON n.oid = s.relnamespace
        JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass
                        AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
        JOIN pg_class t ON t.oid = d.refobjid
        WHERE s.relkind = 'S' AND n.nspname = 'public'""")
    return dict(cur.fetchall())


@_translated
def restart_sequence(cur, name: str, state: tuple[int, bool]) -> None:
    """Give a sequence this state inside the current transaction.

    ALTER SEQUENCE ... RESTART gives the sequence a new relation file, so unlike setval()
    it is undone if the transaction rolls back; the nextval() that follows (to reach
    is_called = true) lands in that same new file."""
    last, called = state
    cur.execute(sql.SQL('ALTER SEQUENCE {} RESTART WITH {}').format(
        sql.Identifier(name), sql.Literal(last)))
    if called:
        cur.execute('SELECT nextval(%s::regclass)', (sql.Identifier(name).as_string(cur),))


@_translated
def horizon(cur) -> dict:
    """This transaction's snapshot (oldest invisible xid, next xid), the cluster's identity,
    and its WAL: timeline (0 without the right to ask) and insert position in bytes."""
    cur.execute("""
        SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint,
               CASE WHEN has_function_privilege('pg_control_system()', 'execute')
                    THEN (SELECT system_identifier::text FROM pg_control_system())
                    ELSE 'db-' || (SELECT oid::text FROM pg_database
                                   WHERE datname = current_database()) END,
               CASE WHEN has_function_privilege('pg_walfile_name(pg_lsn)', 'execute')
                    THEN ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
                    ELSE 0 END,
               (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint
        FROM pg_current_snapshot() AS s""")
    xmin, xmax, system, timeline, lsn = cur.fetchone()
    return {'system': system, 'xmin': int(xmin), 'next': int(xmax), 'timeline': int(timeline),
            'lsn': int(lsn)}


@_translated
def change_counts(cur, checks) -> dict[str, tuple[int, int]]:
    """For (table, horizon xid32 or None, writer xid32 or None): its row count, and how many
    rows were written by transactions at or after the horizon other than the writer."""
    parts = []
    for table, since, writer in checks:
        if since is None:
            newer = sql.SQL('0')
        else:
            cond = sql.SQL('age(xmin) <= age({}::xid)').format(sql.Literal(str(since)))
            if writer is not None:
                cond = sql.SQL('{} AND NOT xmin = {}::xid').format(cond, sql.Literal(str(writer)))
            newer = sql.SQL('count(*) FILTER (WHERE {})').format(cond)
        parts.append(sql.SQL('SELECT {}::text, count(*), {} FROM {}').format(
            sql.Literal(table), newer, sql.Identifier(table)))
    if not parts:
        return {}
    cur.execute(sql.SQL(' UNION ALL ').join(parts))
    return {name: (int(count), int(newer)) for name, count, newer in cur.fetchall()}


@_translated
def fingerprint(cur, table: Table) -> tuple:
    """Row count and an order-independent 128-bit digest of the rows (two seeded 64-bit
    hashes of each row's text, summed as numeric so nothing overflows)."""
    row = _row_text(table)
    cur.execute(sql.SQL("""
        SELECT count(*), coalesce(sum(hashtextextended({row}, 0)), 0),
               coalesce(sum(hashtextextended({row}, 1)), 0)
        FROM {table}""").format(row=row, table=sql.Identifier(table.name)))
    count, a, b = cur.fetchone()
    return (int(count), str(a), str(b))


@_translated
def sequence_states(cur, names) -> dict[str, tuple[int, bool]]:
    """(last_value, is_called) of these sequences, in one query."""
    if not names:
        return {}
    cur.execute(sql.SQL(' UNION ALL ').join(
        sql.SQL('SELECT {}::text, last_value, is_called FROM {}').format(
            sql.Literal(n), sql.Identifier(n)) for n in names))
    return {name: (int(last), bool(called)) for name, last, called in cur.fetchall()}


@_translated
def current_xid32(cur) -> int:
    """This transaction's id (assigning one), as the 32-bit value rows carry in xmin."""
    cur.execute('SELECT pg_current_xact_id()::text::bigint')
    return int(cur.fetchone()[0]) % (1 << 32)


@_translated
def database_encoding(cur) -> dict[str, str]:
    cur.execute("""SELECT pg_encoding_to_char(encoding), datcollate, datctype
                   FROM pg_database WHERE datname = current_database()""")
    encoding, collate, ctype = cur.fetchone()
    return {'encoding': encoding, 'collate': collate, 'ctype': ctype}


@_translated
def alembic_version(cur) -> str | None:
    cur.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL")
    if not cur.fetchone()[0]:
        return None
    cur.execute('SELECT string_agg(version_num, \',\' ORDER BY version_num) FROM alembic_version')
    return cur.fetchone()[0]


@_translated
def replica_role(cur) -> None:
    """Until the transaction ends: no trigger fires, foreign keys included."""
    cur.execute('SET LOCAL session_replication_role = replica')


@_translated
def delete_rows(cur, table: Table, key: tuple[str, ...], keys) -> None:
    """Delete the rows of these primary key values (given as text)."""
    for i in range(0, len(keys), 1000):
        cur.execute(sql.SQL('DELETE FROM {} WHERE {}').format(
            sql.Identifier(table.name), key_filter(table, key, keys[i:i + 1000])))


@_translated
def empty_tables(cur, truncate, delete) -> None:
    """TRUNCATE the first tables together, DELETE every row of the others."""
    if truncate:
        cur.execute(sql.SQL('TRUNCATE {}').format(
            sql.SQL(', ').join(sql.Identifier(n) for n in sorted(truncate))))
    for name in sorted(delete):
        cur.execute(sql.SQL('DELETE FROM {}').format(sql.Identifier(name)))


@_translated
def execute_together(cur, statements) -> None:
    """Statements sent together: one round trip."""
    if statements:
        cur.execute(sql.SQL('; ').join(statements))


# the publication of continuous mode (see publication)

@dataclass(frozen=True)
class PublicationState:
    tables: tuple[str, ...]            # ordinary and partitioned tables of the public schema
    published: tuple[str, ...] | None  # its tables (schema.table outside public); None: none
    all_operations: bool               # publishes insert, update, delete and truncate
    unusable_identity: tuple[str, ...]  # tables whose UPDATE/DELETE a publication would refuse
    role_exists: bool
    granted_tables: tuple[str, ...]    # public tables the role holds SELECT on (granted to it)
    sequences: dict                    # owned sequence -> its table
    granted_sequences: tuple[str, ...]
    schema_usage: bool                 # the role holds USAGE on schema public (granted to it)


_GRANTED = """EXISTS (SELECT 1 FROM aclexplode({acl}) a
                       WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)
                         AND a.privilege_type = {privilege})"""


@_translated
def publication_state(cur, publication: str, role: str) -> PublicationState:
    """What keep_in_step needs to know, read in one transaction."""
    args = {'role': role, 'publication': publication}
    cur.execute("""
        SELECT c.relname,
               -- no usable replica identity: DEFAULT without a primary key, NOTHING, or an
               -- index identity whose index is gone
               NOT (c.relreplident = 'f'
                    OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_index i
                                                          WHERE i.indrelid = c.oid
                                                            AND i.indisprimary))
                    OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_index i
                                                          WHERE i.indrelid = c.oid
                                                            AND i.indisreplident))),
               """ + _GRANTED.format(acl='c.relacl', privilege="'SELECT'") + """
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
        ORDER BY c.relname""", args)
    rows = cur.fetchall()
    cur.execute("""
        SELECT p.pubinsert AND p.pubupdate AND p.pubdelete AND p.pubtruncate,
               (SELECT coalesce(array_agg(CASE WHEN t.schemaname = 'public' THEN t.tablename
                                          ELSE t.schemaname || '.' || t.tablename END
                                          ORDER BY 1), '{}')
                FROM pg_publication_tables t WHERE t.pubname = p.pubname)
        FROM pg_publication p WHERE p.pubname = %(publication)s""", args)
    publication_row = cur.fetchone()
    cur.execute("""
        SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %(role)s),
               """ + _GRANTED.format(acl='n.nspacl', privilege="'USAGE'") + """
        FROM pg_namespace n WHERE n.nspname = 'public'""", args)
    role_exists, usage = cur.fetchone()
    cur.execute("""
        SELECT s.relname, """ + _GRANTED.format(acl='s.relacl', privilege="'SELECT'") + """
        FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace
        WHERE s.relkind = 'S' AND n.nspname = 'public'""", args)
    granted_sequences = tuple(sorted(name for name, granted in cur.fetchall() if granted))
    return PublicationState(
        tables=tuple(name for name, _, _ in rows),
        published=tuple(publication_row[1]) if publication_row else None,
        all_operations=bool(publication_row and publication_row[0]),
        unusable_identity=tuple(name for name, unusable, _ in rows if unusable),
        role_exists=bool(role_exists),
        granted_tables=tuple(name for name, _, granted in rows if granted),
        sequences=owned_sequences(cur),
        granted_sequences=granted_sequences,
        schema_usage=bool(usage))


def _names(names) -> sql.Composed:
    return sql.SQL(', ').join(sql.Identifier(*n.split('.', 1)) if '.' in n
                              else sql.Identifier('public', n) for n in names)


@_translated
def keep_publication(cur, publication: str, role: str, *, create: bool = False,
                     set_tables=None, drop_tables=(), set_operations: bool = False,
                     identity_full=(), grant_tables=(), revoke_tables=(), grant_sequences=(),
                     revoke_sequences=(), grant_schema: bool = False) -> None:
    """The statements of a publication plan, in this transaction (tables by public name)."""
    pub, r = sql.Identifier(publication), sql.Identifier(role)
    for name in identity_full:  # before publishing: UPDATE/DELETE never refused meanwhile
        cur.execute(sql.SQL('ALTER TABLE {} REPLICA IDENTITY FULL').format(_names([name])))
    if create:
        cur.execute(sql.SQL('CREATE PUBLICATION {}').format(pub) + (
            sql.SQL(' FOR TABLE {}').format(_names(set_tables)) if set_tables else sql.SQL('')))
    elif set_tables:
        cur.execute(sql.SQL('ALTER PUBLICATION {} SET TABLE {}').format(pub, _names(set_tables)))
    if drop_tables:
        cur.execute(sql.SQL('ALTER PUBLICATION {} DROP TABLE {}').format(pub, _names(drop_tables)))
    if set_operations:
        cur.execute(sql.SQL("ALTER PUBLICATION {} SET "
                            "(publish = 'insert, update, delete, truncate')").format(pub))
    if grant_schema:
        cur.execute(sql.SQL('GRANT USAGE ON SCHEMA public TO {}').format(r))
    if grant_tables:
        cur.execute(sql.SQL('GRANT SELECT ON TABLE {} TO {}').format(_names(grant_tables), r))
    if revoke_tables:
        cur.execute(sql.SQL('REVOKE ALL ON TABLE {} FROM {}').format(_names(revoke_tables), r))
    if grant_sequences:
        cur.execute(sql.SQL('GRANT SELECT ON SEQUENCE {} TO {}').format(
            _names(grant_sequences), r))
    if revoke_sequences:
        cur.execute(sql.SQL('REVOKE ALL ON SEQUENCE {} FROM {}').format(
            _names(revoke_sequences), r))


@_translated
def drop_publication(cur, publication: str, role: str | None) -> bool:
    """Drop the publication, and take back from `role` what keep_publication granted.
    Returns whether the publication existed."""
    cur.execute('SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = %s)', (publication,))
    existed = cur.fetchone()[0]
    cur.execute(sql.SQL('DROP PUBLICATION IF EXISTS {}').format(sql.Identifier(publication)))
    if role:
        r = sql.Identifier(role)
        cur.execute(sql.SQL('REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}; '
                            'REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {}; '
                            'REVOKE ALL ON SCHEMA public FROM {}').format(r, r, r))
    return bool(existed)


# the source runs ahead of the target by this much at most (what a copy holds in memory)
STREAM_BUFFER_BYTES = 32 << 20
_CHUNK = 1 << 18
_END, _FAILED = object(), object()


class _QueueWriter(io.RawIOBase):
    """Where a BufferedWriter spills its full buffers: into the stream's queue."""

    def __init__(self, stream: TableStream):
        super().__init__()
        self._stream = stream

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._stream._put(bytes(data))
        return len(data)


class _QueueReader:
    """One table's rows for the target's COPY FROM, read from the stream's queue."""

    def __init__(self, stream: TableStream):
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        item = self._stream._get()
        if item is _END:
            return b''
        if item is _FAILED:
            raise DatabaseError('the master stopped sending rows')
        return item


class TableStream:
    """Binary COPY of tables from source to target, one after the other.

    A thread reads the tables from the source in order into a buffer of at most
    STREAM_BUFFER_BYTES (plus one chunk), so the source goes on reading while the target is
    busy between two loads (building the indexes of the table just loaded); nothing else is
    kept in memory or written anywhere. Use as a context manager, then copy_next() per
    table."""

    def __init__(self, source, items: list[tuple[Table, sql.Composable | None]]):
        self._chunks: collections.deque = collections.deque()
        self._queued = 0  # bytes in _chunks
        self._ready = threading.Condition()
        self._stop = threading.Event()
        self._failure: list[BaseException] = []
        self._items = list(items)
        self._thread = threading.Thread(target=self._produce, args=(source,), daemon=True,
                                        name='copy-from-master')

    def __enter__(self) -> TableStream:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        # an unfinished table is read to its end and dropped: the source's connection stays
        # usable (a COPY cut short would leave it in the middle of the protocol)
        self._stop.set()
        self._thread.join()

    def _put(self, item) -> None:
        size = len(item) if isinstance(item, bytes) else 0
        with self._ready:
            while self._queued and self._queued + size > STREAM_BUFFER_BYTES:
                if self._stop.is_set():
                    return
                self._ready.wait(0.1)
            if self._stop.is_set():
                return
            self._chunks.append(item)
            self._queued += size
            self._ready.notify_all()

    def _get(self):
        with self._ready:
            while not self._chunks:
                self._ready.wait()
            item = self._chunks.popleft()
            if isinstance(item, bytes):
                self._queued -= len(item)
            self._ready.notify_all()
            return item

    def _produce(self, source) -> None:
        try:
            with source.cursor() as cur:
                for table, where in self._items:
                    if self._stop.is_set():
                        return
                    with io.BufferedWriter(_QueueWriter(self), buffer_size=_CHUNK) as sink:
                        cur.copy_expert(_copy_out(source, table, where), sink, size=_CHUNK)
                    self._put(_END)
        except BaseException as e:  # reported by the target's side
            self._failure.append(e)
            self._put(_FAILED)

    def copy_next(self, target, table: Table) -> int:
        """Load the next table of the stream into target; the number of rows written."""
        in_sql = sql.SQL('COPY {} ({}) FROM STDIN (FORMAT binary)').format(
            sql.Identifier(table.name), _columns(table)).as_string(target)
        with target.cursor() as cur:
            # when the slave's connection dies mid-COPY, psycopg2 prints a traceback itself
            # (PyErr_Print): keep it for the log, stderr gets our one line
            printed = io.StringIO()
            try:
                with contextlib.redirect_stderr(printed):
                    cur.copy_expert(in_sql, _QueueReader(self), size=_CHUNK)
            except Exception as e:
                if printed.getvalue():
                    logger.debug('psycopg2 printed: %s', printed.getvalue())
                if self._failure:
                    raise DatabaseError(f'reading {table.name} on the master: '
                                        f'{first_line(self._failure[0])}') from None
                # psycopg2 may wrap the server's error in a SystemError: report the cause
                cause = e if isinstance(e, psycopg2.Error) else (e.__cause__ or e)
                raise DatabaseError(f'writing {table.name} on the slave: '
                                    f'{first_line(cause)}') from None
            return cur.rowcount


def _copy_out(source, table: Table, where: sql.Composable | None) -> str:
    if where is None:  # the table form skips the executor: faster than COPY (SELECT ...)
        return sql.SQL('COPY {} ({}) TO STDOUT (FORMAT binary)').format(
            sql.Identifier(table.name), _columns(table)).as_string(source)
    return sql.SQL('COPY (SELECT {} FROM {} WHERE {}) TO STDOUT (FORMAT binary)').format(
        _columns(table), sql.Identifier(table.name), where).as_string(source)


def stream_table(source, target, table: Table, where: sql.Composable | None = None) -> int:
    """COPY one table (or the rows matching `where`) from source to target. Returns the
    number of rows written on target."""
    with TableStream(source, [(table, where)]) as stream:
        return stream.copy_next(target, table)


# continuous replication (see stream/): the slave's superuser session, the replication
# connection to the master, subscriptions and slots

@contextlib.contextmanager
def _effective_user(system_user: str):
    """Connect with the identity of `system_user` (peer authentication reads the effective
    uid of the connecting process); nothing changes when empty or not root."""
    if not system_user or os.geteuid() != 0:
        yield
        return
    try:
        entry = pwd.getpwnam(system_user)
    except KeyError:
        raise DatabaseError(f'no system user {system_user} ([database] admin_system_user)') from None
    uid, gid = os.geteuid(), os.getegid()
    try:
        os.setegid(entry.pw_gid)
        os.seteuid(entry.pw_uid)
        yield
    finally:
        os.seteuid(uid)
        os.setegid(gid)


def admin_connect(dsn: str, system_user: str, application: str):
    """This node's database as its superuser ([database] admin_dsn)."""
    with _effective_user(system_user):
        return connect(dsn, "this node's database as its superuser ([database] admin_dsn)",
                       application=application)


def replication_connect(dsn: str, what: str, application: str):
    """A logical replication connection (replication=database): walsender commands only."""
    try:
        return psycopg2.connect(dsn, application_name=application,
                                connection_factory=psycopg2.extras.LogicalReplicationConnection)
    except psycopg2.Error as e:
        raise DatabaseError(f'cannot connect to {what}: {first_line(e)}') from None


@_translated
def create_exported_slot(conn, slot: str) -> tuple[int, str]:
    """A logical slot (pgoutput) and the snapshot it starts from: every change after the
    snapshot is kept for the slot. The snapshot stays usable while `conn` stays open and idle.
    Returns (its consistent point in bytes, the snapshot's name)."""
    with conn.cursor() as cur:
        cur.execute(f"CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput (SNAPSHOT 'export')")
        _, point, snapshot, _ = cur.fetchone()
    return lsn_bytes(point), snapshot


@_translated
def identify_system(conn) -> str:
    """The cluster's system identifier, over a replication connection (IDENTIFY_SYSTEM: no
    right beyond REPLICATION needed)."""
    with conn.cursor() as cur:
        cur.execute('IDENTIFY_SYSTEM')
        return str(cur.fetchone()[0])


def lsn_bytes(lsn: str) -> int:
    high, low = lsn.split('/')
    return (int(high, 16) << 32) + int(low, 16)


@_translated
def use_snapshot(conn, snapshot: str) -> None:
    """This connection's transaction reads the exported snapshot (first statement)."""
    conn.set_session(isolation_level='REPEATABLE READ', readonly=True)
    with conn.cursor() as cur:
        cur.execute('SET TRANSACTION SNAPSHOT %s', (snapshot,))


@_translated
def wal_position(cur) -> int:
    cur.execute("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
    return int(cur.fetchone()[0])


@_translated
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


@_translated
def drop_slot(cur, name: str) -> None:
    cur.execute('SELECT pg_drop_replication_slot(%s)', (name,))


@_translated
def subscription(cur, name: str) -> dict | None:
    """The subscription's state on this node, None when it does not exist."""
    cur.execute("""
        SELECT s.subenabled, s.subslotname, w.pid,
               coalesce(st.apply_error_count, 0) + coalesce(st.sync_error_count, 0),
               extract(epoch FROM w.latest_end_time)
        FROM pg_subscription s
        LEFT JOIN pg_stat_subscription w ON w.subid = s.oid AND w.relid IS NULL
        LEFT JOIN pg_stat_subscription_stats st ON st.subid = s.oid
        WHERE s.subname = %s AND s.subdbid = (SELECT oid FROM pg_database
                                              WHERE datname = current_database())""", (name,))
    row = cur.fetchone()
    if row is None:
        return None
    enabled, slot, pid, errors, latest = row
    return {'enabled': enabled, 'slot': slot, 'worker': pid, 'errors': int(errors),
            'latest_end_time': float(latest) if latest is not None else None}


@_translated
def drop_subscription(cur, name: str) -> None:
    """Inside the current transaction: stop it and drop it, leaving its slot on the master
    (dropped there apart)."""
    ident = sql.Identifier(name)
    cur.execute(sql.SQL('ALTER SUBSCRIPTION {} DISABLE').format(ident))
    cur.execute(sql.SQL('ALTER SUBSCRIPTION {} SET (slot_name = NONE)').format(ident))
    cur.execute(sql.SQL('DROP SUBSCRIPTION {}').format(ident))


@_translated
def create_subscription(cur, name: str, conninfo: str, publication: str, slot: str) -> None:
    """Inside the current transaction: subscribe on an existing slot, without a copy (the
    caller's copy is the starting point); an apply error disables it."""
    cur.execute(sql.SQL('CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH '
                        '(create_slot = false, slot_name = {}, copy_data = false, '
                        'enabled = true, disable_on_error = true)').format(
        sql.Identifier(name), sql.Literal(conninfo), sql.Identifier(publication),
        sql.Literal(slot)))


@_translated
def disable_subscription(cur, name: str) -> bool:
    """Stop applying; False when there is no such subscription or it was already stopped."""
    cur.execute('SELECT subenabled FROM pg_subscription WHERE subname = %s', (name,))
    row = cur.fetchone()
    if row is None or not row[0]:
        return False
    cur.execute(sql.SQL('ALTER SUBSCRIPTION {} DISABLE').format(sql.Identifier(name)))
    return True


@_translated
def sequence_columns(cur) -> list[tuple[str, str, str]]:
    """(sequence, table, column) of every sequence of the public schema owned by a column."""
    cur.execute("""
        SELECT s.relname, t.relname, a.attname
        FROM pg_class s
        JOIN pg_namespace n ON n.oid = s.relnamespace
        JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass
                        AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
        JOIN pg_class t ON t.oid = d.refobjid
        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
        WHERE s.relkind = 'S' AND n.nspname = 'public'
        ORDER BY s.relname""")
    return cur.fetchall()


@_translated
def sequence_past_column(cur, sequence: str, table: str, column: str) -> int | None:
    """Move the sequence past the column's largest value (never back); the value it was set
    to, None when it already was past."""
    cur.execute(sql.SQL("""
        SELECT setval({seq}::regclass, m) FROM (SELECT max({col})::bigint AS m FROM {table}) x,
               {seqi} s
        WHERE m IS NOT NULL AND (m > s.last_value OR (m = s.last_value AND NOT s.is_called))
        """).format(seq=sql.Literal(sql.Identifier(sequence).as_string(cur)),
                    col=sql.Identifier(column), table=sql.Identifier(table),
                    seqi=sql.Identifier(sequence)))
    row = cur.fetchone()
    return int(row[0]) if row else None


@_translated
def published_tables(cur, publication: str) -> set[str]:
    """The tables of the public schema in the publication (on the master)."""
    cur.execute("SELECT tablename FROM pg_publication_tables WHERE pubname = %s "
                "AND schemaname = 'public'", (publication,))
    return {name for name, in cur.fetchall()}


@_translated
def subscribed_tables(cur, subscription: str) -> set[str]:
    """The tables of the public schema the subscription applies changes to (on the slave)."""
    cur.execute("""
        SELECT c.relname FROM pg_subscription_rel r
        JOIN pg_subscription s ON s.oid = r.srsubid
        JOIN pg_class c ON c.oid = r.srrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE s.subname = %s AND n.nspname = 'public'""", (subscription,))
    return {name for name, in cur.fetchall()}


@_translated
def set_lock_timeout(cur, timeout: str) -> None:
    cur.execute('SET lock_timeout = %s', (timeout,))


@_translated
def end_sessions(cur, application: str) -> int:
    """End every session of `application` (as a superuser: any role's); how many."""
    cur.execute('SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity '
                'WHERE application_name = %s AND pid <> pg_backend_pid()', (application,))
    return int(cur.fetchone()[0])


@_translated
def end_backend(cur, pid: int) -> None:
    cur.execute('SELECT pg_terminate_backend(%s)', (pid,))
