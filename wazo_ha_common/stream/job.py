"""The run of wazo-ha-stream on the slave (every minute): keep the subscription streaming, or
hand off again (copy + fresh subscription) when it is gone, broken, lost its slot, after a
failback or a pause; keep it off while the slave serves; measure the lag."""

from __future__ import annotations

import logging
import time

from ..failover import services
from ..adapters.db import catalog, logical, publishing, session
from ..decisions import health
from .. import jobs, role
from ..errors import WazoHaError
from ..replication.compare import SchemaMismatch
from ..decisions.replication import is_excluded, schema_differences
from ..settings import CONTINUOUS, Settings
from ..adapters.system import read_state, send_mail, single_instance, write_state
from . import PUBLICATION, SLOT_PREFIX, SUBSCRIPTION, connection as access
from .handoff import APPLICATION, hand_off
from ..decisions.stream import (BY_FAILOVER, BY_SCHEMA, DISABLE, DROP, HAND_OFF, Facts, decide,
                                stale_slots)

logger = logging.getLogger('wazo-ha')

JOB = jobs.STREAM
CONTROL_FILE = 'stream-control.json'    # who disabled the subscription, a hand-off asked for
LAG_WAIT = 20.0                         # seconds a run waits for the slave to catch up
UNPLANNED_SUBJECT = 'Slave continuous replication: a fresh copy was needed'
# libpq's words for a master out of reach (not mailed: the master check handles that)
UNREACHABLE = ('timeout expired', 'Connection refused', 'No route to host',
               'Network is unreachable', 'server closed the connection unexpectedly')


class StreamError(WazoHaError):
    """The stream could not be kept or handed off: exit 1, the next run tries again."""


# the control record: kept between runs, written by the failover and pause too (under its
# own lock: the three may write at once)

CONTROL_LOCK = 'wazo-ha-stream-control'
STOP_LOCK_TIMEOUT = '3s'     # the failover waits this long for a lock held by a hand-off
WORKER_STOP_WAIT = 1.0       # seconds the failover lets the apply worker stop by itself


def load_control(settings: Settings) -> dict:
    return read_state(settings.paths.state_dir, CONTROL_FILE)


def update_control(settings: Settings, expect: dict | None = None, **values) -> bool:
    """Set these values; with `expect`, only if the record still holds those (else False)."""
    with single_instance(settings.paths.lock_dir, CONTROL_LOCK, wait=10):
        current = load_control(settings)
        if expect and any(current.get(k) != v for k, v in expect.items()):
            return False
        write_state(settings.paths.state_dir, CONTROL_FILE, {**current, **values})
        return True


def request_hand_off(settings: Settings, reason: str) -> None:
    """The next run hands off (wazo-ha-config resume, a schema change by hand...)."""
    update_control(settings, request=reason)


def _admin(settings: Settings):
    return session.admin_connect(settings.database.admin_dsn, settings.database.admin_system_user,
                                 APPLICATION)


def stop_applying(settings: Settings, by: str) -> str | None:
    """Disable the subscription (failover, pause); what was done, None when nothing was.

    On failover, once the apply worker has stopped, also move every copied table's sequence
    past the table's largest value, so that the slave's own inserts never reuse an id the
    stream brought. A hand-off holding the subscription (its copy under way) is ended rather
    than waited for: the failover must not wait for a copy."""
    if not settings.continuous:
        return None
    admin = session.admin_connect(settings.database.admin_dsn, settings.database.admin_system_user,
                                  'wazo-ha-failover')
    try:
        cur = session.cursor(admin)
        had = _disable_now(admin, cur)
        moved = []
        if by == BY_FAILOVER:
            _wait_worker_gone(admin, cur)
            for seq, table, column in catalog.sequence_columns(cur):
                if not is_excluded(table, settings.database.excluded_tables):
                    value = catalog.sequence_past_column(cur, seq, table, column)
                    if value is not None:
                        moved.append(f'{seq}={value}')
            session.commit(admin)
    finally:
        session.close(admin)
    if had:
        update_control(settings, disabled_by=by)
    said = [f'continuous replication stopped ({by})'] if had else []
    if moved:
        said.append(f"{len(moved)} sequences moved past their table's largest id")
    return '; '.join(said) or None


def _disable_now(admin, cur) -> bool:
    """Disable and commit; a hand-off in the way is ended (its transaction rolls back)."""
    for attempt in (1, 2):
        try:
            session.set_lock_timeout(cur, STOP_LOCK_TIMEOUT)
            had = logical.disable_subscription(cur, SUBSCRIPTION)
            session.commit(admin)
            return had
        except session.DatabaseError as e:
            session.rollback(admin)
            if attempt == 2:
                raise
            ended = session.end_sessions(cur, APPLICATION)
            session.commit(admin)
            logger.warning('failover: ended %d wazo-ha-stream sessions in the way (%s)',
                           ended, e)
    return False


def _wait_worker_gone(admin, cur) -> None:
    """The apply worker finishes the transaction it is applying before it notices: the
    sequences are moved after it. One that does not stop within WORKER_STOP_WAIT (stuck
    connecting to a master that is gone) is ended: it applies nothing, and the failover does
    not wait for it; disabled, the subscription starts no other."""
    deadline = time.monotonic() + WORKER_STOP_WAIT
    while True:
        sub = logical.subscription(cur, SUBSCRIPTION)
        session.rollback(admin)
        if sub is None or sub['worker'] is None:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    session.end_backend(cur, sub['worker'])
    session.commit(admin)
    logger.warning('failover: the apply worker (pid %s) had not stopped after %.0f s: ended',
                   sub['worker'], WORKER_STOP_WAIT)


def before_serving(settings: Settings) -> None:
    """Failover: called by the check before it starts the telephony; never stops it."""
    try:
        said = stop_applying(settings, BY_FAILOVER)
    except (WazoHaError, OSError) as e:
        logger.error('failover: cannot stop the continuous replication: %s (the telephony '
                     'starts anyway)', e)
        return
    if said:
        logger.warning('failover: %s', said)


# the run

def serving(settings: Settings) -> bool:
    """The slave took over: the check decided the master down, or its telephony runs."""
    memory = read_state(settings.paths.state_dir, jobs.CHECK.state_file)
    if memory.get('decision') == health.DOWN:
        return True
    return services.available() and services.running()


HOURLY = '[database] mode is hourly: no stream'


def run(settings: Settings, argument: str | None) -> str:
    master_ip = role.resolve_peer(settings, argument, 'slave', 'the continuous replication')
    record = jobs.load_last_run(settings.paths.state_dir, JOB)
    details = dict(record.details or {}) if record else {}
    if not settings.continuous and details.get('mode') != CONTINUOUS:
        logger.debug('%s', HOURLY)  # never streamed: nothing to look at, nothing to record
        return HOURLY
    with single_instance(settings.paths.lock_dir, JOB.name):
        for stale in ('lag_seconds', 'retained_wal_bytes', 'lagging'):
            details.pop(stale, None)
        started = time.monotonic()
        try:
            sentence = _run(settings, master_ip, details)
        except Exception as e:
            details['duration'] = time.monotonic() - started
            kind = jobs.SCHEMA_MISMATCH if isinstance(e, SchemaMismatch) else jobs.FAILED
            said = str(e) if isinstance(e, WazoHaError) else f'{type(e).__name__}: {e}'
            jobs.save_last_run(settings.paths.state_dir, JOB,
                               jobs.LastRun('failed', time.time(), said, kind, details))
            _mail_once(settings, said, kind)
            raise
        details['duration'] = time.monotonic() - started
        details['mode'] = settings.database.mode  # only once what the mode asks is done
        jobs.save_last_run(settings.paths.state_dir, JOB,
                           jobs.LastRun('ok', time.time(), sentence, None, details))
        update_control(settings, mailed=None)
        logger.info('%s', sentence)
        return sentence


def _run(settings: Settings, master_ip: str, details: dict) -> str:
    control = load_control(settings)
    continuous = settings.continuous
    details.update(master=master_ip, lagging=False)
    admin = _admin(settings)
    try:
        cur = session.cursor(admin)
        sub = logical.subscription(cur, SUBSCRIPTION)
        session.rollback(admin)
        is_serving = continuous and serving(settings)
        if not continuous or is_serving:
            action = decide(Facts(continuous, is_serving, sub, None))
            return _without_master(settings, admin, action)
        access.write_subscription_passfile(settings, master_ip)
        master = access.connect_master(settings, master_ip, APPLICATION)
        try:
            mcur = session.cursor(master)
            differences = _schema_differences(settings, mcur, cur)
            ours = logical.slots(mcur, SLOT_PREFIX)
            changed = sub is not None and (publishing.published_tables(mcur, PUBLICATION)
                                           != logical.subscribed_tables(cur, SUBSCRIPTION))
            session.rollback(master)
            session.rollback(admin)
            action = decide(Facts(True, False, sub, ours.get(sub['slot']) if sub else None,
                                  tuple(differences), control.get('disabled_by'),
                                  control.get('request'), bool(details.get('last_hand_off')),
                                  changed))
            details['subscription'] = _shown(sub)
            if differences:
                if action.kind == DISABLE:
                    logical.disable_subscription(cur, SUBSCRIPTION)
                    session.commit(admin)
                if sub is not None:  # whoever stopped it, the schemas did
                    update_control(settings, disabled_by=BY_SCHEMA)
                raise SchemaMismatch(f'{action.reason}. Both nodes must run the same Wazo '
                                     'version: the stream is stopped and the slave unchanged; '
                                     'it is copied afresh once the schemas are equal')
            if action.kind == HAND_OFF:
                current = _hand_off(settings, master_ip, admin, sub, action, details, control)
                admin = None
            else:
                current = sub['slot']
                details['lag_seconds'] = _lag(mcur, master, current)
                details['lagging'] = details['lag_seconds'] is None
                if details['lagging']:
                    _check_worker(admin, cur, current)
                update_control(settings, mailed_hand_off=None)  # healthy: mail the next one
            _drop_stale(mcur, master, current, details)
            ours = logical.slots(mcur, SLOT_PREFIX)
            session.rollback(master)
            slot = ours.get(current) or {}
            details['retained_wal_bytes'] = slot.get('retained')
            details['slot'] = current
        finally:
            session.close(master)
        if action.kind == HAND_OFF:
            return (f'hand-off done ({action.reason}): {details["last_hand_off"]["sentence"]}; '
                    f'streaming from the master {master_ip} on slot {current}')
        lag = details['lag_seconds']
        return (f'streaming from the master {master_ip}: lag '
                + (f'at most {lag:.1f} s' if lag is not None else f'over {LAG_WAIT:.0f} s')
                + f', {_mb(details["retained_wal_bytes"])} of WAL held on the master')
    finally:
        if admin is not None:
            session.close(admin)


def _check_worker(admin, cur, slot: str) -> None:
    """Behind for LAG_WAIT: a subscription whose worker does not run at all is broken, not
    slow (a refused login, a missing password file): say it, do not report a lag."""
    sub = logical.subscription(cur, SUBSCRIPTION)
    session.rollback(admin)
    if sub is not None and sub['enabled'] and sub['worker'] is None:
        raise StreamError(f'the subscription is enabled but its apply worker does not run (slot '
                          f'{slot}): the slave\'s PostgreSQL log says why (a refused login: run '
                          'wazo-sync -i on the master)')


def _without_master(settings: Settings, admin, action) -> str:
    cur = session.cursor(admin)
    if action.kind == DISABLE:  # the failover did not (it failed, or it is under way)
        session.close(admin)
        said = stop_applying(settings, BY_FAILOVER)
        if said:
            logger.warning('%s', said)
    elif action.kind == DROP:
        logical.drop_subscription(cur, SUBSCRIPTION)
        session.commit(admin)
        update_control(settings, disabled_by=None, request=None)
    return action.reason


def _schema_differences(settings: Settings, mcur, scur) -> list[str]:
    m_version, s_version = catalog.alembic_version(mcur), catalog.alembic_version(scur)
    if m_version != s_version:
        return [f'the master runs Wazo schema version {m_version} and the slave {s_version}']
    return schema_differences(catalog.tables(mcur), catalog.tables(scur),
                              settings.database.excluded_tables)


def _hand_off(settings: Settings, master_ip: str, admin, sub, action, details: dict,
              control: dict) -> str:
    logger.info('hand-off: %s', action.reason)
    result, slot = hand_off(settings, master_ip, admin, sub)
    # what was read before the hand-off is cleared, unless the failover or a pause has
    # written something since
    update_control(settings, expect={'disabled_by': control.get('disabled_by'),
                                     'request': control.get('request')},
                   disabled_by=None, request=None)
    sentence = (f'{len(result.tables_copied)} tables copied ({result.rows} rows), '
                f'{result.sequences_set} sequences set, {result.tables_unchanged} unchanged, in '
                f'{result.duration:.2f} s')
    details['last_hand_off'] = {'at': time.time(), 'reason': action.reason,
                                'planned': action.planned, 'slot': slot,
                                'duration': result.duration, 'sentence': sentence}
    if not action.planned:
        logger.error('continuous replication broke (%s): the slave was copied afresh and '
                     'streams again', action.reason)
        # once per cause until the stream is found healthy again, not every minute
        if load_control(settings).get('mailed_hand_off') != action.reason:
            update_control(settings, mailed_hand_off=action.reason)
            send_mail(settings.mail.sendmail, settings.mail.recipient, UNPLANNED_SUBJECT,
                      f'{JOB.name} found the continuous replication broken: {action.reason}.'
                      f'\n\nThe slave was copied afresh from the master {master_ip} and streams '
                      f'again ({sentence}).\n\nSee {settings.paths.log_file}.\n')
    return slot


def _lag(mcur, master, slot: str) -> float | None:
    """Seconds until the slave confirmed everything the master had written when asked (an
    upper bound of the lag: the slave confirms its position every few tenths of a second);
    None past LAG_WAIT."""
    target = logical.wal_position(mcur)
    started = time.monotonic()
    while True:
        state = logical.slots(mcur, slot).get(slot)
        session.rollback(master)
        if state and state['confirmed'] >= target:
            return round(time.monotonic() - started, 2)
        if time.monotonic() - started > LAG_WAIT:
            return None
        time.sleep(0.1)


def _drop_stale(mcur, master, current: str, details: dict) -> None:
    for name in stale_slots(logical.slots(mcur, SLOT_PREFIX), current):
        try:
            logical.drop_slot(mcur, name)
            session.commit(master)
            logger.info('dropped the slot %s left on the master by an earlier hand-off', name)
        except session.DatabaseError as e:
            session.rollback(master)
            logger.warning('cannot drop the slot %s on the master yet: %s', name, e)


def _shown(sub: dict | None) -> dict | None:
    return None if sub is None else {'enabled': sub['enabled'], 'worker': bool(sub['worker']),
                                     'errors': sub['errors']}


def _mb(value) -> str:
    return '? MB' if value is None else f'{value / 1048576:.1f} MB'


def _mail_once(settings: Settings, error: str, kind: str) -> None:
    """A failure mails root once, not every minute (an unreachable master is the check's
    business: not mailed)."""
    if kind != jobs.SCHEMA_MISMATCH and any(s in error for s in UNREACHABLE):
        return
    key = error.split(':', 1)[0]
    if load_control(settings).get('mailed') == key:
        return
    update_control(settings, mailed=key)
    send_mail(settings.mail.sendmail, settings.mail.recipient, JOB.mail_subject,
              f'{JOB.name} failed on this slave:\n\n{error}\n\nIt tries again every minute; this '
              f'mail is not repeated while it fails the same way.\nSee {settings.paths.log_file}.\n')
