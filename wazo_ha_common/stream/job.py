"""The run of wazo-ha-stream on the slave (every minute): keep the subscription streaming, or
hand off again (copy + fresh subscription) when it is gone, broken, lost its slot, after a
failback or a pause; keep it off while the slave serves; measure the lag."""

from __future__ import annotations

import logging
import time

from .. import db, health, jobs, role, services
from ..errors import InputError, WazoHaError
from ..replication.compare import SchemaMismatch
from ..replication.plan import is_excluded, schema_differences
from ..settings import Settings
from ..system import read_state, send_mail, single_instance, write_state
from . import PUBLICATION, SLOT_PREFIX, SUBSCRIPTION, access
from .handoff import APPLICATION, hand_off
from .plan import (BY_FAILOVER, BY_SCHEMA, DISABLE, DROP, HAND_OFF, Facts, decide,
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


# the control record: kept between runs, written by the failover and pause too

def load_control(settings: Settings) -> dict:
    return read_state(settings.paths.state_dir, CONTROL_FILE)


def update_control(settings: Settings, **values) -> None:
    write_state(settings.paths.state_dir, CONTROL_FILE, {**load_control(settings), **values})


def request_hand_off(settings: Settings, reason: str) -> None:
    """The next run hands off (wazo-ha-config resume, a schema change by hand...)."""
    update_control(settings, request=reason)


def _admin(settings: Settings):
    return db.admin_connect(settings.database.admin_dsn, settings.database.admin_system_user,
                            APPLICATION)


def stop_applying(settings: Settings, by: str) -> str | None:
    """Disable the subscription (failover, pause); what was done, None when there is none.
    On failover also move every copied table's sequence past the table's largest value, so
    that the slave's own inserts never reuse an id the stream brought."""
    if settings.database.mode != 'continuous':
        return None
    admin = _admin(settings)
    try:
        cur = db.cursor(admin)
        had = db.disable_subscription(cur, SUBSCRIPTION)
        moved = []
        if by == BY_FAILOVER:
            for seq, table, column in db.sequence_columns(cur):
                if not is_excluded(table, settings.database.excluded_tables):
                    value = db.sequence_past_column(cur, seq, table, column)
                    if value is not None:
                        moved.append(f'{seq}={value}')
        db.commit(admin)
    finally:
        db.close(admin)
    if had:
        update_control(settings, disabled_by=by)
    said = [f'continuous replication stopped ({by})'] if had else []
    if moved:
        said.append(f"{len(moved)} sequences moved past their table's largest id")
    return '; '.join(said) or None


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

def resolve_master(settings: Settings, argument: str | None) -> str:
    config = role.require_role(settings.paths.ha_conf, settings.paths.sentinel_dir,
                               'slave', 'the continuous replication')
    if argument is None:
        return role.validate_peer(config.remote_address)
    ip = role.validate_peer(argument)
    if ip != config.remote_address:
        raise InputError(f'{ip} is not the master configured in ha.conf ({config.remote_address})')
    return ip


def serving(settings: Settings) -> bool:
    """The slave took over: the check decided the master down, or its telephony runs."""
    memory = read_state(settings.paths.state_dir, jobs.CHECK.state_file)
    if memory.get('decision') == health.DOWN:
        return True
    return services.available() and services.running()


def run(settings: Settings, argument: str | None) -> str:
    master_ip = resolve_master(settings, argument)
    with single_instance(settings.paths.lock_dir, JOB.name):
        record = jobs.load_last_run(settings.paths.state_dir, JOB)
        details = dict(record.details or {}) if record else {}
        started = time.monotonic()
        try:
            sentence = _run(settings, master_ip, details)
        except WazoHaError as e:
            details['duration'] = time.monotonic() - started
            kind = jobs.SCHEMA_MISMATCH if isinstance(e, SchemaMismatch) else jobs.FAILED
            jobs.save_last_run(settings.paths.state_dir, JOB,
                               jobs.LastRun('failed', time.time(), str(e), kind, details))
            _mail_once(settings, str(e), kind)
            raise
        details['duration'] = time.monotonic() - started
        jobs.save_last_run(settings.paths.state_dir, JOB,
                           jobs.LastRun('ok', time.time(), sentence, None, details))
        update_control(settings, mailed=None)
        logger.info('%s', sentence)
        return sentence


def _run(settings: Settings, master_ip: str, details: dict) -> str:
    control = load_control(settings)
    continuous = settings.database.mode == 'continuous'
    if not continuous and details.get('mode') != 'continuous':
        details['mode'] = settings.database.mode  # never streamed: nothing to look at
        return '[database] mode is hourly: no stream'
    details.update(mode=settings.database.mode, master=master_ip, lagging=False)
    admin = _admin(settings)
    try:
        cur = db.cursor(admin)
        sub = db.subscription(cur, SUBSCRIPTION)
        db.rollback(admin)
        is_serving = continuous and serving(settings)
        if not continuous or is_serving:
            action = decide(Facts(continuous, is_serving, sub, None))
            return _without_master(settings, admin, action, details)
        master = access.connect_master(settings, master_ip, APPLICATION)
        try:
            mcur = db.cursor(master)
            differences = _schema_differences(settings, mcur, cur)
            ours = db.slots(mcur, SLOT_PREFIX)
            changed = sub is not None and \
                db.published_tables(mcur, PUBLICATION) != db.subscribed_tables(cur, SUBSCRIPTION)
            db.rollback(master)
            db.rollback(admin)
            action = decide(Facts(True, False, sub, ours.get(sub['slot']) if sub else None,
                                  tuple(differences), control.get('disabled_by'),
                                  control.get('request'), bool(details.get('last_hand_off')),
                                  changed))
            details['subscription'] = _shown(sub)
            if differences:
                if action.kind == DISABLE:
                    db.disable_subscription(cur, SUBSCRIPTION)
                    db.commit(admin)
                if sub is not None:  # whoever stopped it, the schemas did
                    update_control(settings, disabled_by=BY_SCHEMA)
                raise SchemaMismatch(f'{action.reason}. Both nodes must run the same Wazo '
                                     'version: the stream is stopped and the slave unchanged; '
                                     'it is copied afresh once the schemas are equal')
            if action.kind == HAND_OFF:
                current = _hand_off(settings, master_ip, admin, sub, action, details)
                admin = None
            else:
                current = sub['slot']
                details['lag_seconds'] = _lag(mcur, master, current)
                details['lagging'] = details['lag_seconds'] is None
            _drop_stale(mcur, master, current, details)
            ours = db.slots(mcur, SLOT_PREFIX)
            db.rollback(master)
            slot = ours.get(current) or {}
            details['retained_wal_bytes'] = slot.get('retained')
            details['slot'] = current
        finally:
            db.close(master)
        if action.kind == HAND_OFF:
            return (f'hand-off done ({action.reason}): {details["last_hand_off"]["sentence"]}; '
                    f'streaming from the master {master_ip} on slot {current}')
        lag = details['lag_seconds']
        return (f'streaming from the master {master_ip}: lag '
                + (f'at most {lag:.1f} s' if lag is not None else f'over {LAG_WAIT:.0f} s')
                + f', {_mb(details["retained_wal_bytes"])} of WAL held on the master')
    finally:
        if admin is not None:
            db.close(admin)


def _without_master(settings: Settings, admin, action, details: dict) -> str:
    cur = db.cursor(admin)
    if action.kind == DISABLE:
        db.disable_subscription(cur, SUBSCRIPTION)
        db.commit(admin)
        update_control(settings, disabled_by=BY_FAILOVER)
    elif action.kind == DROP:
        db.drop_subscription(cur, SUBSCRIPTION)
        db.commit(admin)
        update_control(settings, disabled_by=None, request=None)
    details['lag_seconds'] = None
    return action.reason


def _schema_differences(settings: Settings, mcur, scur) -> list[str]:
    m_version, s_version = db.alembic_version(mcur), db.alembic_version(scur)
    if m_version != s_version:
        return [f'the master runs Wazo schema version {m_version} and the slave {s_version}']
    return schema_differences(db.tables(mcur), db.tables(scur), settings.database.excluded_tables)


def _hand_off(settings: Settings, master_ip: str, admin, sub, action, details: dict) -> str:
    logger.info('hand-off: %s', action.reason)
    result, slot = hand_off(settings, master_ip, admin, sub)
    update_control(settings, disabled_by=None, request=None)
    sentence = (f'{len(result.tables_copied)} tables copied ({result.rows} rows), '
                f'{result.sequences_set} sequences set, {result.tables_unchanged} unchanged, in '
                f'{result.duration:.2f} s')
    details['last_hand_off'] = {'at': time.time(), 'reason': action.reason,
                                'planned': action.planned, 'slot': slot,
                                'duration': result.duration, 'sentence': sentence}
    details['lag_seconds'] = None
    if not action.planned:
        logger.error('continuous replication broke (%s): the slave was copied afresh and '
                     'streams again', action.reason)
        send_mail(settings.mail.sendmail, settings.mail.recipient, UNPLANNED_SUBJECT,
                  f'{JOB.name} found the continuous replication broken: {action.reason}.\n\n'
                  f'The slave was copied afresh from the master {master_ip} and streams again '
                  f'({sentence}).\n\nSee {settings.paths.log_file}.\n')
    return slot


def _lag(mcur, master, slot: str) -> float | None:
    """Seconds until the slave confirmed everything the master had written when asked (an
    upper bound of the lag: the slave confirms its position every few tenths of a second);
    None past LAG_WAIT."""
    target = db.wal_position(mcur)
    started = time.monotonic()
    while True:
        state = db.slots(mcur, slot).get(slot)
        db.rollback(master)
        if state and state['confirmed'] >= target:
            return round(time.monotonic() - started, 2)
        if time.monotonic() - started > LAG_WAIT:
            return None
        time.sleep(0.1)


def _drop_stale(mcur, master, current: str, details: dict) -> None:
    for name in stale_slots(db.slots(mcur, SLOT_PREFIX), current):
        try:
            db.drop_slot(mcur, name)
            db.commit(master)
            logger.info('dropped the slot %s left on the master by an earlier hand-off', name)
        except db.DatabaseError as e:
            db.rollback(master)
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
