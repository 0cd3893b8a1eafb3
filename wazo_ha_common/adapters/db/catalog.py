"""The catalog and content queries of the copy: tables, keys, indexes, foreign keys, sequences,
fingerprints, row hashes, the snapshot's horizon; the statements the slave's write runs."""

from __future__ import annotations

from psycopg2 import sql

from ...decisions.schema import ForeignKey, Index, Table
from .session import translated


def columns(table: Table) -> sql.Composed:
    return sql.SQL(', ').join(sql.Identifier(c) for c in table.column_names)


def _row_text(table: Table) -> sql.Composed:
    """A row's text form over the named columns: the same on both nodes whatever the
    physical column order (session settings fix the text of every type)."""
    return sql.SQL('ROW({})::text').format(columns(table))


@translated
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
        # a superuser's session (search_path pg_catalog, pg_temp) names public's types
        # public.x: the same type as x in a session that has public in its path
        found.setdefault(table, []).append((column, type_.removeprefix('public.')))
    return {t: Table(t, tuple(cols)) for t, cols in found.items()}


@translated
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


@translated
def row_hashes(cur, table: Table, key: tuple[str, ...]) -> dict[tuple, tuple[int, int]]:
    """primary key -> a 128-bit hash of the row's text, for every row."""
    row = _row_text(table)
    cur.execute(sql.SQL('SELECT {}, hashtextextended({row}, 0), hashtextextended({row}, 1) '
                        'FROM {}').format(
        sql.SQL(', ').join(sql.SQL('{}::text').format(sql.Identifier(c)) for c in key),
        sql.Identifier(table.name), row=row))
    n = len(key)
    return {tuple(r[:n]): (r[n], r[n + 1]) for r in cur}


@translated
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


def drop(thing: Index | ForeignKey) -> sql.Composed:
    """The statement dropping this index or foreign key (rebuilt by `create`)."""
    if isinstance(thing, ForeignKey):
        return sql.SQL('ALTER TABLE {}.{} DROP CONSTRAINT {}').format(
            sql.Identifier(thing.schema), sql.Identifier(thing.table), sql.SQL(thing.name))
    if thing.constraint:
        return sql.SQL('ALTER TABLE {} DROP CONSTRAINT {}').format(
            sql.Identifier(thing.table), sql.SQL(thing.name))
    return sql.SQL('DROP INDEX {}').format(sql.SQL(thing.name))


def create(thing: Index | ForeignKey) -> sql.Composed:
    """The statement building this index or foreign key again."""
    if isinstance(thing, ForeignKey):
        return sql.SQL('ALTER TABLE {}.{} ADD CONSTRAINT {} {}').format(
            sql.Identifier(thing.schema), sql.Identifier(thing.table), sql.SQL(thing.name),
            sql.SQL(thing.definition))
    if thing.constraint:
        return sql.SQL('ALTER TABLE {} ADD CONSTRAINT {} {}').format(
            sql.Identifier(thing.table), sql.SQL(thing.name), sql.SQL(thing.definition))
    return sql.Composed([sql.SQL(thing.definition)])


@translated
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


@translated
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


@translated
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


@translated
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


@translated
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


@translated
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


@translated
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


@translated
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


@translated
def sequence_states(cur, names) -> dict[str, tuple[int, bool]]:
    """(last_value, is_called) of these sequences, in one query."""
    if not names:
        return {}
    cur.execute(sql.SQL(' UNION ALL ').join(
        sql.SQL('SELECT {}::text, last_value, is_called FROM {}').format(
            sql.Literal(n), sql.Identifier(n)) for n in names))
    return {name: (int(last), bool(called)) for name, last, called in cur.fetchall()}


@translated
def current_xid32(cur) -> int:
    """This transaction's id (assigning one), as the 32-bit value rows carry in xmin."""
    cur.execute('SELECT pg_current_xact_id()::text::bigint')
    return int(cur.fetchone()[0]) % (1 << 32)


@translated
def database_encoding(cur) -> dict[str, str]:
    cur.execute("""SELECT pg_encoding_to_char(encoding), datcollate, datctype
                   FROM pg_database WHERE datname = current_database()""")
    encoding, collate, ctype = cur.fetchone()
    return {'encoding': encoding, 'collate': collate, 'ctype': ctype}


@translated
def alembic_version(cur) -> str | None:
    cur.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL")
    if not cur.fetchone()[0]:
        return None
    cur.execute('SELECT string_agg(version_num, \',\' ORDER BY version_num) FROM public.alembic_version')
    return cur.fetchone()[0]


@translated
def delete_rows(cur, table: Table, key: tuple[str, ...], keys) -> None:
    """Delete the rows of these primary key values (given as text)."""
    for i in range(0, len(keys), 1000):
        cur.execute(sql.SQL('DELETE FROM {} WHERE {}').format(
            sql.Identifier(table.name), key_filter(table, key, keys[i:i + 1000])))


@translated
def empty_tables(cur, truncate, delete) -> None:
    """TRUNCATE the first tables together, DELETE every row of the others."""
    if truncate:
        cur.execute(sql.SQL('TRUNCATE {}').format(
            sql.SQL(', ').join(sql.Identifier(n) for n in sorted(truncate))))
    for name in sorted(delete):
        cur.execute(sql.SQL('DELETE FROM {}').format(sql.Identifier(name)))


@translated
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


@translated
def sequence_past_column(cur, sequence: str, table: str, column: str) -> int | None:
    """Move the sequence past the column's largest value (never back); the value it was set
    to, None when it already was past."""
    cur.execute(sql.SQL("""
        SELECT setval({seq}::regclass, m) FROM (SELECT max({col})::bigint AS m FROM {table}) x,
               {seqi} s
        WHERE m IS NOT NULL AND (m > s.last_value OR (m = s.last_value AND NOT s.is_called))
        """).format(seq=sql.Literal(sql.Identifier('public', sequence).as_string(cur)),
                    col=sql.Identifier(column), table=sql.Identifier('public', table),
                    seqi=sql.Identifier('public', sequence)))
    row = cur.fetchone()
    return int(row[0]) if row else None
