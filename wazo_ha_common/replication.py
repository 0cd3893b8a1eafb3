"""xivo-master-slave-db-replication: copy the master's configuration database to the slave.

The master is read from one REPEATABLE READ snapshot; the slave is written in one
transaction, so it holds either its old content or the new copy, never a mix. Tables that
did not change on either node since the last run (see tracking), or whose content already
matches, are not rewritten nor locked for writing.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import logging
import os
import time
from dataclasses import asdict, dataclass, field

import psycopg2

from . import db, jobs, pg_access, role, tracking
from .jobs import REPLICATION
from .errors import InputError, WazoHaError
from .settings import Settings
from .system import read_text, single_instance, write_atomic

logger = logging.getLogger('wazo-ha')

TRACKING_FILE = 'replication-tracking.json'


class SchemaMismatch(WazoHaError):
    """The two nodes do not run the same Wazo schema: replication would corrupt the slave."""


class ConstraintRebuildFailed(db.DatabaseError):
    """The master's rows break a constraint the slave built again after a bulk load."""


@dataclass
class Result:
    slave: str
    started_at: float
    duration: float = 0.0
    tables_copied: list[str] = field(default_factory=list)
    tables_unchanged: int = 0
    tables_excluded: list[str] = field(default_factory=list)
    sequences_set: int = 0
    rows: int = 0
    slave_write_seconds: float = 0.0

    def sentence(self) -> str:
        if not self.tables_copied and not self.sequences_set:
            return (f'replication to {self.slave}: the slave was already up to date '
                    f'({self.tables_unchanged} tables compared, {len(self.tables_excluded)} '
                    f'excluded) in {self.duration:.2f} s')
        return (f'replication to {self.slave}: {len(self.tables_copied)} tables copied '
                f'({self.rows} rows), {self.sequences_set} sequences set, '
                f'{self.tables_unchanged} unchanged, {len(self.tables_excluded)} excluded, '
                f'in {self.duration:.2f} s (slave written for {self.slave_write_seconds:.2f} s)')


# decisions (pure)

def is_excluded(table: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(table, p) for p in patterns)


def split_tables(names, patterns) -> tuple[list[str], list[str]]:
    copied = sorted(t for t in names if not is_excluded(t, patterns))
    excluded = sorted(t for t in names if is_excluded(t, patterns))
    return copied, excluded


def schema_differences(master: dict, slave: dict, patterns: tuple[str, ...]) -> list[str]:
    """What differs between the two nodes' copied tables, one sentence each."""
    out = []
    for name in sorted(set(master) | set(slave)):
        if is_excluded(name, patterns):
            continue
        if name not in slave:
            out.append(f'table {name} is missing on the slave')
        elif name not in master:
            out.append(f'table {name} exists on the slave only')
        elif master[name].columns != slave[name].columns:
            m, s = dict(master[name].columns), dict(slave[name].columns)
            for column in sorted(set(m) | set(s)):
                if column not in s:
                    out.append(f'column {name}.{column} is missing on the slave')
                elif column not in m:
                    out.append(f'column {name}.{column} exists on the slave only')
                elif m[column] != s[column]:
                    out.append(f'column {name}.{column} is {m[column]} on the master, '
                               f'{s[column]} on the slave')
    return out


def truncatable(rewritten: set[str], foreign_keys, empty: set[str] = frozenset()) -> set[str]:
    """Tables that TRUNCATE may empty: every table referencing them is emptied too.

    `foreign_keys`: (referencing, referenced) pairs; a referencing table outside the public
    schema is named schema.table, so it is never emptied and what it references is not
    truncated. The others are emptied with DELETE (with FK triggers off), so that rows of excluded
    tables referencing a copied table (auth_session -> auth_tenant) survive. `empty`: tables
    with no row on either node that may join the TRUNCATE (nothing of theirs is lost) where
    that lets a rewritten table they reference be truncated."""
    result = set(rewritten) | set(empty)
    changed = True
    while changed:
        changed = False
        for src, dst in foreign_keys:
            if dst in result and src not in result:
                result.discard(dst)
                changed = True
    changed = True
    while changed:  # an empty table that references nothing kept is no help: leave it alone
        changed = False
        for extra in sorted(result & set(empty) - set(rewritten)):
            if not any(src == extra and dst in result and dst != extra
                       for src, dst in foreign_keys):
                result.discard(extra)
                changed = True
    return result


@dataclass(frozen=True)
class WritePlan:
    """How the slave's write empties the tables it rewrites whole, and what it drops before
    loading them and builds again after, in the same transaction (nobody else ever sees
    anything missing)."""
    truncate: frozenset[str] = frozenset()      # the others are emptied with DELETE
    indexes: tuple[db.Index, ...] = ()
    foreign_keys: tuple[db.ForeignKey, ...] = ()
    whole_tables: frozenset[str] = frozenset()  # every index of these, constraints included


def write_plan(rewritten: set[str], rows: dict[str, int], foreign_keys: list[db.ForeignKey],
               empty: set[str], indexes: list[db.Index], constraints: bool = True) -> WritePlan:
    """Indexes are cheaper built once after a load than maintained row by row (measured: a
    build costs about 40% of the maintenance), so tables receiving at least
    REBUILD_INDEXES_FROM_ROWS rows are loaded with their plain indexes dropped.

    `rows`: rows each table receives; `foreign_keys`: every foreign key into the public
    schema; `empty`: copied tables without a row on either node; `indexes`: the indexes of
    the heavy tables. A heavy table also loses its constraint indexes when (a) nothing but
    foreign keys rests on its indexes, (b) every foreign key pointing at it comes from a
    public table truncated in this write (adding it back then checks the master's rows,
    which satisfied it, or no row at all), and (c) that saves more than the foreign keys cost
    to drop and add back: at least ROWS_PER_FOREIGN_KEY rows x constraint indexes per
    foreign key. Empty tables pointing at such a table join its TRUNCATE (nothing of theirs
    is lost). `constraints` False: plain indexes only (the fallback when a constraint cannot
    be built again over the master's rows)."""
    heavy = {t for t in rewritten if rows[t] >= REBUILD_INDEXES_FROM_ROWS}
    inbound = [k for k in foreign_keys if k.references in heavy]
    candidates = set()
    for table in sorted(heavy) if constraints else ():
        own = [i for i in indexes if i.table == table]
        into = [k for k in inbound if k.references == table]
        unique = sum(1 for i in own if i.constraint or i.unique)
        if (all(i.movable for i in own)
                and all(k.movable and k.schema == 'public'
                        and (k.table in rewritten or k.table in empty) for k in into)
                and rows[table] * unique >= ROWS_PER_FOREIGN_KEY * len(into)):
            candidates.add(table)
    extras = {k.table for k in inbound
              if k.references in candidates and k.table in empty and k.table not in rewritten}
    truncate = truncatable(rewritten, [(k.source, k.references) for k in foreign_keys], extras)
    whole = candidates & truncate
    dropped = tuple(i for i in indexes if i.table in whole or (
        i.table in heavy and i.movable and not i.unique and not i.constraint))
    return WritePlan(frozenset(truncate), dropped,
                     tuple(k for k in inbound if k.references in whole), frozenset(whole))


# the run

def resolve_slave(config: role.HaConfig, argument: str | None, own=None) -> str:
    if argument is None:
        return role.validate_peer(config.remote_address, own)
    ip = role.validate_peer(argument, own)
    if ip != config.remote_address:
        raise InputError(f'{ip} is not the slave configured in ha.conf '
                         f'({config.remote_address}); nothing done')
    return ip


def run(settings: Settings, argument: str | None) -> Result:
    config = role.require_role(settings.paths.ha_conf, settings.paths.sentinel_dir,
                                   'master', 'replication')
    slave_ip = resolve_slave(config, argument)
    with single_instance(settings.paths.lock_dir, REPLICATION.name):
        result = Result(slave=slave_ip, started_at=time.time())
        started = time.monotonic()
        try:
            _replicate(settings, slave_ip, result)
        except SchemaMismatch as e:
            _save_state(settings, result, started, error=str(e), kind=jobs.SCHEMA_MISMATCH)
            raise
        except (db.DatabaseError, psycopg2.Error) as e:
            message = f'replication to {slave_ip} failed, the slave is unchanged: {db.first_line(e)}'
            _save_state(settings, result, started, error=message)
            raise db.DatabaseError(message) from None
        _save_state(settings, result, started)
        logger.info('%s', result.sentence())
        return result


def _save_state(settings: Settings, result: Result, started: float, error: str | None = None,
                kind: str = jobs.FAILED):
    result.duration = time.monotonic() - started
    jobs.save_last_run(settings.paths.state_dir, REPLICATION, jobs.LastRun(
        'failed' if error else 'ok', time.time(), error or result.sentence(),
        kind if error else None, asdict(result)))


def slave_dsn(settings: Settings, ip: str) -> str:
    return pg_access.slave_dsn(settings, ip)  # the replication role, its password file, TLS


def _replicate(settings: Settings, slave_ip: str, result: Result) -> None:
    patterns = settings.database.excluded_tables
    master = db.connect(settings.database.local_dsn, 'the master database ([database] local_dsn)',
                        application=REPLICATION.name)
    try:
        slave = db.connect(slave_dsn(settings, slave_ip),
                           f'the slave database {settings.database.name} at '
                           f'{slave_ip}:{settings.database.remote_port} as '
                           f'{settings.database.remote_user}', application=REPLICATION.name)
    except db.DatabaseError as e:
        master.close()
        raise db.DatabaseError(pg_access.connection_hint(str(e), settings)) from None
    except BaseException:
        master.close()
        raise
    try:
        _end_stale_sessions(slave)
        master.set_session(isolation_level='REPEATABLE READ', readonly=True)
        with master.cursor() as mcur, slave.cursor() as scur:
            _check_compatible(mcur, scur)
            master_tables, slave_tables = db.tables(mcur), db.tables(scur)
            differences = schema_differences(master_tables, slave_tables, patterns)
            if differences:
                raise SchemaMismatch(
                    'the slave does not have the same database schema as the master: '
                    + '; '.join(differences[:10])
                    + (f' (and {len(differences) - 10} more)' if len(differences) > 10 else '')
                    + '. Both nodes must run the same Wazo version: upgrade the slave, then '
                    'the master, then replicate again. The slave is unchanged.')
            copied, excluded = split_tables(master_tables, patterns)
            result.tables_excluded = excluded
            tables = [master_tables[t] for t in copied]
            now = (db.horizon(mcur), db.horizon(scur))
            record = tracking.from_json(read_text(_tracking_path(settings)))
            why = tracking.usable(record, slave_ip, settings.database.name, *now)
            if why:
                logger.info('comparing the tables by content: %s', why)
                record = None
            counts, changed = _find_changes(mcur, scur, tables, record)
            sequences = _changed_sequences(mcur, scur, set(copied))
            result.tables_unchanged = len(copied) - len(changed)
            writer = None
            if changed or sequences:
                foreign_keys = db.foreign_keys(scur)
                try:
                    writer = _write(master, slave, scur, changed, counts, sequences,
                                    foreign_keys, record, result)
                except ConstraintRebuildFailed as e:
                    # only if the master holds rows its own constraints never checked
                    # (loaded with triggers off): write again, constraints kept in place
                    logger.warning('%s; writing again with the constraints kept', e)
                    slave.rollback()
                    writer = _write(master, slave, scur, changed, counts, sequences,
                                    foreign_keys, record, result, constraints=False)
            else:
                slave.rollback()
        try:
            master.rollback()  # the snapshot was only read: losing the session now costs nothing
        except psycopg2.Error as e:
            logger.warning('ending the read on the master: %s', db.first_line(e))
        _save_tracking(settings, slave_ip, now, tables, counts, changed, writer, record)
    finally:
        for conn in (master, slave):
            try:
                conn.close()
            except psycopg2.Error:
                pass  # already broken: the server rolls the transaction back


# make the slave notice a master that vanished (killed, cut off) within about 30 s, so the
# open transaction is rolled back and its locks released without waiting hours for TCP
SLAVE_SESSION_TIMEOUTS = ('SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; '
                          'SET tcp_keepalives_count = 3; SET tcp_user_timeout = 30000')


def _end_stale_sessions(slave) -> None:
    """End what a killed or cut-off earlier run left on the slave (its open transaction
    would otherwise hold its locks until the slave notices the dead connection). Only one
    run at a time holds the master's lock, so any other session of ours is stale."""
    with slave.cursor() as cur:
        cur.execute(SLAVE_SESSION_TIMEOUTS)
        # only the replication role's own sessions: it may end those, and no others
        cur.execute('SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity '
                    'WHERE application_name = %s AND usename = current_user '
                    'AND pid <> pg_backend_pid()', (REPLICATION.name,))
        for pid, _ in cur.fetchall():
            logger.warning('ended session %s left on the slave by an interrupted replication', pid)
    slave.commit()


def _check_compatible(mcur, scur) -> None:
    m, s = db.database_encoding(mcur), db.database_encoding(scur)
    if m['encoding'] != s['encoding']:
        raise SchemaMismatch(
            f"the master's database is encoded in {m['encoding']} (locale {m['ctype']}) and "
            f"the slave's in {s['encoding']} (locale {s['ctype']}): text cannot be copied "
            'faithfully. Recreate the slave\'s PostgreSQL cluster with the master\'s locale '
            '(see "Troubleshooting: locale" in the README). The slave is unchanged.')
    if (m['collate'], m['ctype']) != (s['collate'], s['ctype']):
        logger.warning('the master (%s) and the slave (%s) databases use different locales; '
                       'sorting may differ between them', m['collate'], s['collate'])
    mv, sv = db.alembic_version(mcur), db.alembic_version(scur)
    if mv != sv:
        raise SchemaMismatch(
            f'the master runs Wazo schema version {mv} and the slave {sv}: both nodes must '
            'run the same Wazo version (upgrade the slave, then the master, then replicate '
            'again). The slave is unchanged.')


def _tracking_path(settings: Settings) -> str:
    return os.path.join(settings.paths.state_dir, TRACKING_FILE)


def _find_changes(mcur, scur, tables: list[db.Table], record):
    """Row counts on both nodes and the tables to rewrite.

    Tables the record tracks are judged by counts and row xmins (no content read); the
    others by counts, then by a digest of their content when the counts are equal."""
    tracked, untracked = [], []
    for t in tables:
        rec = record.tables.get(t.name) if record else None
        if rec and rec.columns == tracking.columns_digest(t.columns):
            tracked.append((t, rec))
        else:
            untracked.append(t)
    m_since = tracking.xid32(record.master.xmin) if record else None
    s_since = tracking.xid32(record.slave_node.xmin) if record else None
    m_checks = [(t.name, m_since, None) for t, _ in tracked] + [(t.name, None, None) for t in untracked]
    s_checks = [(t.name, s_since, rec.writer) for t, rec in tracked] + \
               [(t.name, None, None) for t in untracked]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        on_master = pool.submit(db.change_counts, mcur, m_checks)
        on_slave = pool.submit(db.change_counts, scur, s_checks)
        m, s = on_master.result(), on_slave.result()
    counts = {name: (m[name][0], s[name][0]) for name in m}
    changed = set()
    for t, rec in tracked:
        (mc, mn), (sc, sn) = m[t.name], s[t.name]
        if mn or sn or mc != rec.master_count or sc != rec.slave_count:
            changed.add(t.name)
    same_count = []
    for t in untracked:
        if m[t.name][0] != s[t.name][0]:
            changed.add(t.name)
        elif m[t.name][0]:
            same_count.append(t)
    if same_count:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            on_master = pool.submit(lambda: [db.fingerprint(mcur, t) for t in same_count])
            on_slave = pool.submit(lambda: [db.fingerprint(scur, t) for t in same_count])
            for t, a, b in zip(same_count, on_master.result(), on_slave.result()):
                if a != b:
                    changed.add(t.name)
    return counts, [t for t in tables if t.name in changed]


def _save_tracking(settings, slave_ip, now, tables, counts, changed, writer, record) -> None:
    """After a successful run: what the next run compares against."""
    rewritten = {t.name for t in changed}
    entries = {}
    for t in tables:
        master_count, slave_count = counts[t.name]
        old = record.tables.get(t.name) if record else None
        entries[t.name] = tracking.TableRecord(
            columns=tracking.columns_digest(t.columns), master_count=master_count,
            slave_count=master_count if t.name in rewritten else slave_count,
            writer=writer if t.name in rewritten else (old.writer if old else None))
    new = tracking.Record(slave=slave_ip, database=settings.database.name, master=now[0],
                          slave_node=now[1], tables=entries)
    try:
        write_atomic(_tracking_path(settings), new.to_json() + '\n')
    except OSError as e:
        logger.error('cannot record the replication tracking state: %s', e)


def _changed_sequences(mcur, scur, copied: set[str]) -> dict[str, tuple[int, bool]]:
    """Sequences of copied tables whose state differs: name -> the master's state."""
    owned = db.owned_sequences(mcur)
    names = sorted(seq for seq, table in owned.items() if table in copied)
    slave_owned = set(db.owned_sequences(scur))
    names = [n for n in names if n in slave_owned]
    m, s = db.sequence_states(mcur, names), db.sequence_states(scur, names)
    return {n: m[n] for n in names if m[n] != s[n]}


# tables up to this size are compared row by row (by primary key) and only the differing
# rows are rewritten; above it, or past ROW_DIFF_MAX_SHARE of rows differing, the whole table
ROW_DIFF_MAX_ROWS = 100_000
# tables rewritten whole with at least this many rows get their indexes rebuilt (write_plan)
REBUILD_INDEXES_FROM_ROWS = 5_000
# ... their constraint indexes too when rows x constraint indexes reach this per foreign key
# that has to be dropped and added back for it (measured here: a foreign key costs about 2 ms
# to drop and add back, a unique index about 0.4 ms per 1,000 rows to maintain, not build)
ROWS_PER_FOREIGN_KEY = 5_000
ROW_DIFF_MAX_SHARE = 0.3


def _differing_rows(master, scur, table, key, record) -> tuple[list, list]:
    """Keys of the slave rows to delete and of the master rows to copy.

    With a usable tracking record, only rows written since the last run on either node
    (and keys present on one node only) differ: no content is read. Without, rows are
    compared by a 128-bit hash of their content."""
    rec = record.tables.get(table.name) if record else None
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        if rec is not None:
            on_master = pool.submit(db.keys_since, master.cursor(), table, key,
                                    tracking.xid32(record.master.xmin), None)
            on_slave = pool.submit(db.keys_since, scur, table, key,
                                   tracking.xid32(record.slave_node.xmin), rec.writer)
            (m_keys, m_new), (s_keys, s_new) = on_master.result(), on_slave.result()
            stale = (s_keys - m_keys) | s_new | (m_new & s_keys)
            fresh = (m_keys - s_keys) | m_new | (s_new & m_keys)
            return sorted(stale), sorted(fresh)
        on_master = pool.submit(db.row_hashes, master.cursor(), table, key)
        on_slave = pool.submit(db.row_hashes, scur, table, key)
        m, s = on_master.result(), on_slave.result()
    return ([k for k, h in s.items() if m.get(k) != h],
            [k for k, h in m.items() if s.get(k) != h])


def _rewrite_rows(master, slave, scur, table, key, counts, record, result) -> bool:
    """Rewrite only the rows that differ; False when the whole table should be rewritten."""
    master_count, slave_count = counts[table.name]
    if not key or not slave_count or max(master_count, slave_count) > ROW_DIFF_MAX_ROWS:
        return False
    stale, fresh = _differing_rows(master, scur, table, key, record)
    if len(stale) + len(fresh) > ROW_DIFF_MAX_SHARE * max(master_count, slave_count):
        return False
    for i in range(0, len(stale), 1000):
        scur.execute(db.sql.SQL('DELETE FROM {} WHERE {}').format(
            db.sql.Identifier(table.name), db.key_filter(table, key, stale[i:i + 1000])))
    written = 0
    for i in range(0, len(fresh), 1000):
        written += db.stream_table(master, slave, table,
                                   where=db.key_filter(table, key, fresh[i:i + 1000]))
    if written != len(fresh) or slave_count - len(stale) + written != master_count:
        raise db.DatabaseError(f'{table.name}: {written} of {len(fresh)} rows written, the '
                               'counts do not add up; nothing was kept on the slave')
    result.rows += written
    result.tables_copied.append(table.name)
    return True


def _write(master, slave, scur, changed, counts, sequences, foreign_keys, record,
           result: Result, constraints: bool = True) -> int:
    """Rewrite the changed tables and sequences in the slave's transaction, commit.
    Returns the transaction's xid (rows it wrote carry it as xmin). `constraints`: whether
    bulk loads may drop and rebuild constraints (write_plan)."""
    write_started = time.monotonic()
    result.rows, result.tables_copied = 0, []  # counted again if this write is done again
    scur.execute('SET LOCAL session_replication_role = replica')
    writer = db.current_xid32(scur)
    keys = db.primary_keys(scur)
    whole = []
    for table in changed:
        if not _rewrite_rows(master, slave, scur, table, keys.get(table.name), counts, record,
                             result):
            whole.append(table)
    names = {t.name for t in whole}
    rows = {n: counts[n][0] for n in names}
    heavy = sorted(n for n in names if rows[n] >= REBUILD_INDEXES_FROM_ROWS)
    plan = write_plan(names, rows, foreign_keys, {n for n, c in counts.items() if c == (0, 0)},
                      db.indexes(scur, heavy) if heavy else [], constraints)
    if plan.truncate:
        scur.execute(db.sql.SQL('TRUNCATE {}').format(
            db.sql.SQL(', ').join(db.sql.Identifier(n) for n in sorted(plan.truncate))))
    for name in sorted(names - plan.truncate):
        scur.execute(db.sql.SQL('DELETE FROM {}').format(db.sql.Identifier(name)))
    load_started = time.monotonic()
    copy_seconds, rebuild_seconds = _load(master, slave, scur, whole, counts, plan, result)
    sequences_started = time.monotonic()
    for seq, state in sequences.items():
        db.restart_sequence(scur, seq, state)
    result.sequences_set = len(sequences)
    commit_started = time.monotonic()
    slave.commit()
    logger.info('slave write phases: compare and empty %.2f s, copy %.2f s, %d indexes and %d '
                'foreign keys rebuilt in %.2f s, sequences %.2f s, commit %.2f s',
                load_started - write_started, copy_seconds, len(plan.indexes),
                len(plan.foreign_keys), rebuild_seconds, commit_started - sequences_started,
                time.monotonic() - commit_started)
    result.slave_write_seconds = time.monotonic() - write_started
    return writer


def _load(master, slave, scur, whole, counts, plan: WritePlan, result: Result):
    """Copy the emptied tables whole, without what the plan drops, and build that again:
    each table's indexes right after its load (the master reads the next tables meanwhile),
    the foreign keys at the end. Returns the seconds spent copying and rebuilding."""
    _execute_all(scur, [fk.drop() for fk in plan.foreign_keys]
                 + [index.drop() for index in plan.indexes])
    copy_seconds = rebuild_seconds = 0.0
    try:
        with db.TableStream(master, [(t, None) for t in whole]) as stream:
            for table in whole:
                started = time.monotonic()
                rows = stream.copy_next(slave, table)
                # what was written must be what the master's snapshot holds, or nothing is kept
                if rows != counts[table.name][0]:
                    raise db.DatabaseError(f'{rows} rows of {table.name} written, the master '
                                           f'has {counts[table.name][0]}; nothing was kept on '
                                           'the slave')
                result.rows += rows
                result.tables_copied.append(table.name)
                loaded = time.monotonic()
                _execute_all(scur, [i.create() for i in plan.indexes if i.table == table.name])
                copy_seconds += loaded - started
                rebuild_seconds += time.monotonic() - loaded
        started = time.monotonic()
        _execute_all(scur, [fk.create() for fk in plan.foreign_keys])
        rebuild_seconds += time.monotonic() - started
    except psycopg2.IntegrityError as e:
        if not plan.whole_tables:
            raise
        raise ConstraintRebuildFailed(
            f'rebuilding the constraints of {", ".join(sorted(plan.whole_tables))} after the '
            f'load failed: {db.first_line(e)}') from None
    return copy_seconds, rebuild_seconds


def _execute_all(cur, statements) -> None:
    """Statements sent together: one round trip to the slave."""
    if statements:
        cur.execute(db.sql.SQL('; ').join(statements))
