"""The run of xivo-master-slave-db-replication: role and lock, compare, write, record."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, NoReturn


from .. import jobs, role
from ..adapters.db import catalog, session
from ..adapters.system import (read_state, read_text, send_mail, single_instance, write_atomic,
                               write_state)
from ..decisions import tracking
from ..decisions.replication import verification_due
from . import origin
from ..errors import InputError
from ..settings import Settings
from .compare import SchemaMismatch, copied_tables, find_changes
from .nodes import Nodes
from .write import Copy, Writer

logger = logging.getLogger('wazo-ha')

NAME = jobs.REPLICATION.name
MAIL_SUBJECT = jobs.REPLICATION.mail_subject
STATE_FILE = jobs.REPLICATION.state_file
TRACKING_FILE = 'replication-tracking.json'
VERIFY_STATE_FILE = jobs.VERIFICATION_FILE
DEFECT_MAIL_SUBJECT = 'Slave replication: the tracking missed a difference'


@dataclass(kw_only=True)
class Result(Copy):
    slave: str
    started_at: float
    verified: bool = False    # every copied table compared by content
    differing: list[str] = field(default_factory=list)           # (verified runs)
    missed_by_tracking: list[str] = field(default_factory=list)  # (verified runs)
    stream: dict | None = None   # continuous mode: the slave's slot on this master
    publication: list[str] = field(default_factory=list)  # continuous mode: what changed
    replace_slave: bool = False  # --replace-slave: the slave may have copied another cluster
    held: str | None = None      # why the slave's database was left alone (it serves)
    fallback: dict | None = None  # continuous mode, the stream not in force: why (cause, said,
                                  # fix, since); this run copied as in hourly mode

    def sentence(self) -> str:
        if self.held is not None:
            return (f'the database of the slave {self.slave} is left alone: {self.held}; the '
                    'copy resumes once it has given telephony back (--force copies anyway)')
        if self.stream == {}:  # --replace-slave in continuous mode: no slot here yet
            return (f'continuous replication to {self.slave}: --replace-slave: the slave now '
                    'takes this master cluster and copies it afresh at its next wazo-ha-stream '
                    f'run once it does not serve telephony ({self.sequences_set} sequences moved '
                    f'forward, in {self.duration:.2f} s)')
        if self.stream is not None:
            return (f'continuous replication to {self.slave}: the slave streams on slot '
                    f'{self.stream["slot"]} ({"active" if self.stream["active"] else "inactive"}, '
                    f'{self.stream["retained"] / 1048576:.1f} MB of WAL held); publication '
                    + ('updated' if self.publication else 'unchanged')
                    + f', {self.sequences_set} sequences moved forward on the slave, in '
                    f'{self.duration:.2f} s')
        target = f'{self.slave} (verified by content)' if self.verified else self.slave
        if self.fallback is not None:
            target = (f'{self.slave} (hourly copy: continuous replication is not in force, '
                      f'{self.fallback["said"]})')
        if not self.tables_copied and not self.sequences_set:
            return (f'replication to {target}: the slave was already up to date '
                    f'({self.tables_unchanged} tables compared, {len(self.tables_excluded)} '
                    f'excluded) in {self.duration:.2f} s')
        return (f'replication to {target}: {len(self.tables_copied)} tables copied '
                f'({self.rows} rows), {self.sequences_set} sequences set, '
                f'{self.tables_unchanged} unchanged, {len(self.tables_excluded)} excluded, '
                + (f'{self.orphans} rows of the slave left without their parent cleared, '
                   if self.orphans else '')
                + f'in {self.duration:.2f} s (slave written for {self.slave_write_seconds:.2f} s)')


def run(settings: Settings, argument: str | None, verify: bool = False, *,
        reconcile: Callable[[Settings, str, Result, Callable], None],
        serving: Callable[[str], str | None] | None = None, force: bool = False,
        replace: bool = False) -> Result:
    """One replication; `verify`: compare every copied table by content (else done when
    [database] verify_every says it is due). In continuous mode the stream carries the rows:
    `reconcile` (the stream's master side, given by the command) does this run's part; given
    the copy as in hourly mode (copy(prepare)), it makes it when the stream is not in force.
    `serving(slave_ip)` (given by the command) says why the slave must be left alone now (it
    serves telephony, or that cannot be told), None when it may be written; `force` copies
    anyway. In hourly mode it is asked while the run logs into both databases and compares
    (reads only): its answer comes before anything is written, and a slave that serves is left
    alone whatever the comparison found. `replace`: --replace-slave (see origin)."""
    slave_ip = role.resolve_peer(settings, argument, 'master', 'replication')
    with single_instance(settings.paths.lock_dir, NAME), \
            concurrent.futures.ThreadPoolExecutor(1) as asking:
        result = Result(slave=slave_ip, started_at=time.time())
        asked = asking.submit(serving, slave_ip) if serving is not None and not force else None
        if settings.continuous and asked is not None and asked.result() is not None:
            return _hold(settings, slave_ip, result, asked.result())
        last = read_state(settings.paths.state_dir, VERIFY_STATE_FILE).get('finished_at')
        result.verified = verify or verification_due(last, result.started_at,
                                                     settings.database.verify_every)
        started = time.monotonic()
        continuous = settings.continuous
        if continuous:
            if verify:
                raise InputError('--verify compares the hourly copy: in continuous mode the '
                                 'stream carries the rows (see wazo-ha-stream); nothing done')
            result.verified = False
        try:
            if continuous:
                result.replace_slave = replace
                def copy(prepare: Callable[[Nodes], None], trust: Callable[[], bool]) -> None:
                    _replicate(settings, slave_ip, result, replace, None if force else serving,
                               prepare=prepare, trust_tracking=trust)
                reconcile(settings, slave_ip, result, copy)
            else:
                _replicate(settings, slave_ip, result, replace, None if force else serving,
                           asked=asked)
        except SlaveServes as e:  # rolled back (a failover came while copying), held
            if e.during_copy:
                logger.warning('replication to %s rolled back: the slave started serving '
                               'telephony during the copy', slave_ip)
            return _hold(settings, slave_ip, Result(slave=slave_ip, started_at=result.started_at),
                         e.why)
        except (origin.ForeignMasterError, SchemaMismatch, session.DatabaseError) as e:
            # a slave that serves is left alone before anything else is said of it
            why = asked.result() if asked is not None and not settings.continuous else None
            if why is not None:
                return _hold(settings, slave_ip,
                             Result(slave=slave_ip, started_at=result.started_at), why)
            _failed(settings, result, started, slave_ip, e)
        _save_state(settings, result, started)
        if result.verified and not continuous:
            _report_verification(settings, result, by_hand=verify)
        logger.info('%s', result.sentence())
        return result


def _failed(settings: Settings, result: Result, started: float, slave_ip: str,
            e: Exception) -> NoReturn:
    """Record a failed run and raise its error."""
    if isinstance(e, origin.ForeignMasterError):
        _save_state(settings, result, started, error=str(e))
        raise e
    if isinstance(e, SchemaMismatch):
        _save_state(settings, result, started, error=str(e), kind=jobs.SCHEMA_MISMATCH)
        raise e
    message = f'replication to {slave_ip} failed, the slave is unchanged: {e}'
    _save_state(settings, result, started, error=message)
    raise session.DatabaseError(message) from None


def guard_slave(settings: Settings, nodes: Nodes, slave_ip: str, master_system: str,
                replace: bool) -> str | None:
    """A rebuilt master never wipes the slave (see origin): ForeignMasterError (the slave's
    transaction rolled back), or the identifier to be recorded in the slave's transaction just
    before it commits, with the copy (None: already recorded)."""
    master = origin.master_identity(settings, master_system)
    try:
        record = origin.guard(nodes.scur, origin.own_address(slave_ip), master, replace)
    except origin.ForeignMasterError:
        nodes.rollback_slave()
        raise
    if not record:
        return None
    origin.write_at_commit(nodes, master, NAME)
    return master


def _hold(settings: Settings, slave_ip: str, result: Result, why: str) -> Result:
    """The slave serves telephony (or may): what users change there (forwards, DND, new
    users) must not be replaced nor its tables locked under live calls. Its database is only
    logged into, so that an unreachable slave fails as any run does."""
    started = time.monotonic()
    try:
        Nodes(settings, slave_ip, NAME).close()
    except session.DatabaseError as e:
        message = f'replication to {slave_ip} failed, the slave is unchanged: {e}'
        _save_state(settings, result, started, error=message)
        raise session.DatabaseError(message) from None
    result.held = why
    now = time.time()
    before = jobs.load_last_run(settings.paths.state_dir, jobs.REPLICATION)
    past = (before.details or {}) if before else {}
    # the last actual copy: the last 'ok' run, or what the held runs since then carried on
    copied_at = before.finished_at if before and before.ok else past.get('last_copied_at')
    doubt = why.startswith('cannot tell')
    doubt_since = (past.get('cannot_tell_since') or now) if doubt else None
    mailed = bool(doubt and past.get('cannot_tell_mailed'))
    if doubt and not mailed and now - doubt_since >= HELD_MAIL_AFTER:
        send_mail(settings.mail.sendmail, settings.mail.recipient, MAIL_SUBJECT,
                  f'{NAME} has left the database of the slave {slave_ip} alone for '
                  f'{(now - doubt_since) / 3600:.1f} hours: {why}. Nothing is copied until '
                  'this is cleared (or a run by hand with --force copies anyway).\n\n'
                  f'See {settings.paths.log_file}.\n')
        mailed = True
    result.duration = time.monotonic() - started
    details = asdict(result)
    details.update(last_copied_at=copied_at, cannot_tell_since=doubt_since,
                   cannot_tell_mailed=mailed)
    jobs.save_last_run(settings.paths.state_dir, jobs.REPLICATION,
                       jobs.LastRun(HELD, now, result.sentence(), None, details))
    logger.info('%s', result.sentence())
    return result


HELD = 'held'              # a run that left the serving slave alone: no copy, no failure
HELD_MAIL_AFTER = 7200.0   # seconds of 'cannot tell' before root is mailed (once)


class SlaveServes(Exception):
    """The slave's record says it serves now: its transaction is rolled back (never
    committed). `during_copy`: raised by the commit guard, after the copy was written."""

    def __init__(self, why: str, during_copy: bool = True):
        super().__init__(why)
        self.why, self.during_copy = why, during_copy


def _commit_guard(serving: Callable[[str], str | None], slave_ip: str):
    """Re-read the slave's failback record right before the commit: a failover that opened
    its episode while this run copied wins (the episode opens before the failover's first
    step, see failover.check)."""
    @contextlib.contextmanager
    def guard():
        why = serving(slave_ip)
        if why is not None:
            raise SlaveServes(why)
        yield
    return guard


def _replicate(settings: Settings, slave_ip: str, result: Result, replace: bool = False,
               serving: Callable[[str], str | None] | None = None,
               prepare: Callable[[Nodes], None] | None = None,
               trust_tracking: bool | Callable[[], bool] = True,
               asked: concurrent.futures.Future | None = None) -> None:
    """The atomic copy. `prepare(nodes)` (the stream's fallback) runs first, before the
    master's snapshot is taken; without `trust_tracking` (a callable: read after `prepare`)
    every table is compared by content (a stream may have written the slave behind the
    tracking record's back). `asked`: serving's answer
    under way (read while this compares), awaited before any write; SlaveServes when the
    slave serves."""
    with Nodes(settings, slave_ip, NAME) as nodes:
        if serving is not None:
            nodes.commit_guard = _commit_guard(serving, slave_ip)
        if prepare is not None:
            prepare(nodes)
        tables, result.tables_excluded = copied_tables(nodes, settings.database.excluded_tables)
        now = tuple(tracking.Horizon(**h) for h in nodes.both(catalog.horizon))
        to_record = guard_slave(settings, nodes, slave_ip, now[0].system, replace)
        trust = trust_tracking() if callable(trust_tracking) else trust_tracking
        if not trust:
            logger.info('comparing the tables by content: a stream may have written the slave '
                        'since the last copy that did')
        record = _trusted_record(settings, slave_ip, now) if trust else None
        if result.verified or record is None:  # every row read: not on a slave that serves
            _unless_serving(asked, nodes)
        changes = find_changes(nodes, tables, record, verify=result.verified)
        _unless_serving(asked, nodes)
        result.tables_unchanged = len(tables) - len(changes.tables)
        if result.verified:
            result.differing, result.missed_by_tracking = \
                [t.name for t in changes.tables], changes.missed
        writer = None
        if changes:
            writer = Writer(nodes, changes, record, result).write()
        elif to_record:
            nodes.commit_slave()   # nothing to copy, but the record is new
        else:
            nodes.rollback_slave()
        nodes.end_read()
    _save_tracking(settings, slave_ip, now, tables, changes, writer, record)


def _unless_serving(asked: concurrent.futures.Future | None, nodes: Nodes) -> None:
    """serving's answer: SlaveServes (the slave's transaction rolled back) when it serves."""
    why = asked.result() if asked is not None else None
    if why is not None:
        nodes.rollback_slave()
        raise SlaveServes(why, during_copy=False)


def _tracking_path(settings: Settings) -> str:
    return os.path.join(settings.paths.state_dir, TRACKING_FILE)


def _trusted_record(settings: Settings, slave_ip: str, now) -> tracking.Record | None:
    record = tracking.from_json(read_text(_tracking_path(settings)))
    why = tracking.usable(record, slave_ip, settings.database.name, *now)
    if why:
        logger.info('comparing the tables by content: %s', why)
        return None
    return record


def _save_state(settings: Settings, result: Result, started: float, error: str | None = None,
                kind: str = jobs.FAILED):
    result.duration = time.monotonic() - started
    jobs.save_last_run(settings.paths.state_dir, jobs.REPLICATION, jobs.LastRun(
        'failed' if error else 'ok', time.time(), error or result.sentence(),
        kind if error else None, asdict(result)))


def _report_verification(settings: Settings, result: Result, by_hand: bool) -> None:
    """Record what the verification found (wazo-ha-status shows it); a difference the
    tracking record had missed is a defect of ours: logged and mailed to root."""
    write_state(settings.paths.state_dir, VERIFY_STATE_FILE,
                {'finished_at': time.time(), 'by_hand': by_hand, 'duration': result.duration,
                 'differing': result.differing, 'missed_by_tracking': result.missed_by_tracking})
    if result.missed_by_tracking:
        tables = ', '.join(result.missed_by_tracking)
        logger.error('the replication tracking missed a difference in %s (repaired by this '
                     'verification): a defect of wazo-ha, please report it', tables)
        send_mail(settings.mail.sendmail, settings.mail.recipient, DEFECT_MAIL_SUBJECT,
                  f'{NAME} compared every copied table by content and found the slave different '
                  f'from the master in {tables}, which the replication tracking had judged '
                  'unchanged. The difference is repaired; the tracking missing it is a defect '
                  f'of wazo-ha: please report it.\n\nSee {settings.paths.log_file}.\n')


def _save_tracking(settings, slave_ip, now, tables, changes, writer, record) -> None:
    """After a successful run: what the next run compares against."""
    rewritten = {t.name for t in changes.tables}
    entries = {}
    for t in tables:
        master_count, slave_count = changes.counts[t.name]
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
