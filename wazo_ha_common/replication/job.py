"""The run of xivo-master-slave-db-replication: role and lock, compare, write, record."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field

from .. import db, jobs, origin, publication, role, tracking
from ..errors import InputError
from ..settings import Settings
from ..system import read_state, read_text, send_mail, single_instance, write_atomic, write_state
from ..stream import SLOT_PREFIX
from .compare import SchemaMismatch, copied_tables, find_changes, sequences_forward
from .nodes import Nodes
from .plan import verification_due
from .write import Writer

logger = logging.getLogger('wazo-ha')

NAME = jobs.REPLICATION.name
MAIL_SUBJECT = jobs.REPLICATION.mail_subject
STATE_FILE = jobs.REPLICATION.state_file
TRACKING_FILE = 'replication-tracking.json'
VERIFY_STATE_FILE = jobs.VERIFICATION_FILE
DEFECT_MAIL_SUBJECT = 'Slave replication: the tracking missed a difference'


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
    orphans: int = 0          # rows of tables not copied that lost their parent in the write
    verified: bool = False    # every copied table compared by content
    differing: list[str] = field(default_factory=list)           # (verified runs)
    missed_by_tracking: list[str] = field(default_factory=list)  # (verified runs)
    stream: dict | None = None   # continuous mode: the slave's slot on this master
    publication: list[str] = field(default_factory=list)  # continuous mode: what changed

    def sentence(self) -> str:
        if self.stream is not None:
            return (f'continuous replication to {self.slave}: the slave streams on slot '
                    f'{self.stream["slot"]} ({"active" if self.stream["active"] else "inactive"}, '
                    f'{self.stream["retained"] / 1048576:.1f} MB of WAL held); publication '
                    + ('updated' if self.publication else 'unchanged')
                    + f', {self.sequences_set} sequences moved forward on the slave, in '
                    f'{self.duration:.2f} s')
        target = f'{self.slave} (verified by content)' if self.verified else self.slave
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


def resolve_slave(config: role.HaConfig, argument: str | None, own=None) -> str:
    if argument is None:
        return role.validate_peer(config.remote_address, own)
    ip = role.validate_peer(argument, own)
    if ip != config.remote_address:
        raise InputError(f'{ip} is not the slave configured in ha.conf '
                         f'({config.remote_address}); nothing done')
    return ip


def run(settings: Settings, argument: str | None, verify: bool = False,
        replace: bool = False) -> Result:
    """One replication; `verify`: compare every copied table by content (else done when
    [database] verify_every says it is due)."""
    config = role.require_role(settings.paths.ha_conf, settings.paths.sentinel_dir,
                                   'master', 'replication')
    slave_ip = resolve_slave(config, argument)
    with single_instance(settings.paths.lock_dir, NAME):
        result = Result(slave=slave_ip, started_at=time.time())
        last = read_state(settings.paths.state_dir, VERIFY_STATE_FILE).get('finished_at')
        result.verified = verify or verification_due(last, result.started_at,
                                                     settings.database.verify_every)
        started = time.monotonic()
        continuous = settings.database.mode == 'continuous'
        if continuous:
            if verify:
                raise InputError('--verify compares the hourly copy: in continuous mode the '
                                 'stream carries the rows (see wazo-ha-stream); nothing done')
            result.verified = False
        try:
            if continuous:
                _reconcile(settings, slave_ip, result, replace)
            else:
                _replicate(settings, slave_ip, result, replace)
        except origin.ForeignMasterError as e:
            _save_state(settings, result, started, error=str(e))
            raise
        except SchemaMismatch as e:
            _save_state(settings, result, started, error=str(e), kind=jobs.SCHEMA_MISMATCH)
            raise
        except db.DatabaseError as e:
            message = f'replication to {slave_ip} failed, the slave is unchanged: {e}'
            _save_state(settings, result, started, error=message)
            raise db.DatabaseError(message) from None
        _save_state(settings, result, started)
        if result.verified and not continuous:
            _report_verification(settings, result, by_hand=verify)
        logger.info('%s', result.sentence())
        return result


def _guard(settings: Settings, nodes: Nodes, slave_ip: str, master_system: str,
           replace: bool) -> str | None:
    """A rebuilt master never wipes the slave (see origin): ForeignMasterError, or the
    identifier to record in the slave's transaction (None: already recorded)."""
    master = origin.master_identity(settings, master_system)
    try:
        record = origin.guard(settings, nodes.scur, origin.own_address(slave_ip), master,
                              replace, NAME)
    except origin.ForeignMasterError:
        nodes.rollback_slave()
        raise
    return master if record else None


def _replicate(settings: Settings, slave_ip: str, result: Result, replace: bool = False) -> None:
    with Nodes(settings, slave_ip, NAME) as nodes:
        tables, result.tables_excluded = copied_tables(nodes, settings.database.excluded_tables)
        now = tuple(tracking.Horizon(**h) for h in nodes.both(db.horizon))
        to_record = _guard(settings, nodes, slave_ip, now[0].system, replace)
        if to_record:
            origin.write(nodes.scur, to_record, NAME)
        record = _trusted_record(settings, slave_ip, now)
        changes = find_changes(nodes, tables, record, verify=result.verified)
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


def _reconcile(settings: Settings, slave_ip: str, result: Result, replace: bool = False) -> None:
    """Continuous mode: the slave's stream carries the rows (wazo-ha-stream on the slave hands
    off when needed); this run keeps the publication in step with the copied tables, moves the
    slave's sequences forward to the master's (logical replication does not carry them; never
    back: the slave may be serving), and checks that the slave has its slot here."""
    result.publication = publication.keep_in_step(settings)
    for line in result.publication:
        logger.info('publication: %s', line)
    with Nodes(settings, slave_ip, NAME) as nodes:
        master_system = nodes.both(db.horizon)[0]['system']
        to_record = _guard(settings, nodes, slave_ip, master_system, replace)
        if to_record:
            origin.write(nodes.scur, to_record, NAME)
        tables, result.tables_excluded = copied_tables(nodes, settings.database.excluded_tables)
        result.tables_unchanged = len(tables)
        forward = sequences_forward(nodes, {t.name for t in tables})
        for seq, state in forward.items():
            db.restart_sequence(nodes.scur, seq, state)
        nodes.commit_slave()
        result.sequences_set = len(forward)
        slots = db.slots(nodes.mcur, SLOT_PREFIX)
        nodes.end_read()
    if not slots:
        raise db.DatabaseError(
            'continuous replication: the slave has no replication slot on this master: is '
            'wazo-ha-stream running on the slave, with [database] mode = continuous there? '
            '(the slave streams nothing until it hands off)')
    name = max(slots, key=lambda n: (slots[n]['active'], n))
    result.stream = {'slot': name, **slots[name]}
    if slots[name]['wal_status'] == 'lost':
        raise db.DatabaseError(f'continuous replication: the slot {name} of the slave lost WAL '
                               '([database] slot_wal_keep_size): the slave copies afresh at its '
                               'next wazo-ha-stream run')


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
