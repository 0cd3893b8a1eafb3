"""The run of wazo-ha-stream on the slave (every minute): keep the subscription streaming, or
hand off again (copy + fresh subscription) when it is gone, broken, lost its slot, after a
failback or a pause; keep it off while the slave serves; measure the lag."""

from __future__ import annotations

import logging
import time

from .. import jobs, role
from ..adapters.db import catalog, logical, publishing, session
from ..adapters.system import mail_once, single_instance
from ..decisions import health
from ..decisions.replication import schema_differences
from ..decisions.stream import (BY_FAILOVER, BY_SCHEMA, DISABLE, DROP, ENABLE, HAND_OFF,
                                LAG_WAIT, Facts, UNREACHABLE_WORDS, decide, re_enabled,
                                slave_cause)
from ..errors import WazoHaError
from ..decisions.origin import Look, kept_serving
from ..failover import check, master_origin, services
from ..replication import origin
from ..replication.compare import SchemaMismatch
from ..settings import CONTINUOUS, Settings
from . import PUBLICATION, SLOT_PREFIX, SUBSCRIPTION, connection as access, owner, slots
from .control import (Control, load_control, mailed, no_failover_since, record_cause,
                      update_control)
from .failover import stop_applying
from .handoff import APPLICATION, SlotDropped, hand_off

logger = logging.getLogger('wazo-ha')

JOB = jobs.STREAM
UNPLANNED_SUBJECT = 'Slave continuous replication: a fresh copy was needed'
TAMPERED_SUBJECT = 'Slave continuous replication: the subscription was tampered with'
# libpq's words for a master out of reach (not mailed: the master check handles that; the
# master's hourly run copies meanwhile, and mails the cause it sees)
UNREACHABLE = UNREACHABLE_WORDS


class StreamError(WazoHaError):
    """The stream could not be kept or handed off: exit 1, the next run tries again."""


def _admin(settings: Settings):
    return session.admin_connect(settings.database.admin_dsn, settings.database.admin_system_user,
                                 APPLICATION)


# the run

def serving(settings: Settings) -> bool:
    """The slave took over: the check decided the master down, or its telephony runs."""
    if check.last_decision(settings) == health.DOWN:
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
            if settings.continuous:  # the master's hourly run copies meanwhile: status says why
                record_cause(settings, *slave_cause(said))
            _mail_once(settings, said, kind)
            raise
        details['duration'] = time.monotonic() - started
        details['mode'] = settings.database.mode  # only once what the mode asks is done
        jobs.save_last_run(settings.paths.state_dir, JOB,
                           jobs.LastRun('ok', time.time(), sentence, None, details))
        update_control(settings, mailed=None)
        record_cause(settings, None, None)
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
        if is_serving:  # the failover check gives telephony back only to the same cluster
            _look_at_master(settings, master_ip, admin)
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
                                  tuple(differences), control.disabled_by,
                                  control.request, bool(details.get('last_hand_off')),
                                  changed, control.re_enabled))
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
                if action.kind == ENABLE:
                    _enable_again(settings, admin, cur, sub, action)
                _keep_subscription(settings, master_ip, admin, cur)
                current = sub['slot']
                details['lag_seconds'] = slots.lag(mcur, master, current)
                details['lagging'] = details['lag_seconds'] is None
                if details['lagging']:
                    _check_worker(admin, cur, current)
                update_control(settings, mailed_hand_off=None)  # healthy: mail the next one
            slots.drop_stale(mcur, master, current, details)
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


def _look_at_master(settings: Settings, master_ip: str, admin) -> None:
    """While the slave serves: which cluster answers at the master's address now, and is it
    the one this slave copied from (replication/origin)? Kept for the failover check
    (failover/master_origin): it gives no telephony back to a rebuilt master. A master out of
    reach leaves the last look as it was."""
    try:
        replicator = access.connect_replication(settings, master_ip, APPLICATION)
    except WazoHaError as e:
        logger.debug('the master %s cannot be looked at: %s', master_ip, e)
        return
    try:
        system = logical.identify_system(replicator)
    except Exception as e:  # the driver's own errors too: a look, never the run's failure
        logger.debug('the master %s cannot be looked at: %s', master_ip, e)
        return
    finally:
        session.close(replicator)
    recorded = origin.read(session.cursor(admin))
    session.rollback(admin)
    look = Look(master_ip, system, recorded, time.time())
    earlier = master_origin.load(settings)
    master_origin.save(settings, look)
    if look.foreign and (earlier is None or not earlier.foreign or earlier.system != system):
        logger.error('%s', kept_serving(master_ip))


def _enable_again(settings: Settings, admin, cur, sub: dict, action) -> None:
    """A subscription PostgreSQL disabled on an error (disable_on_error: any lost connection
    too), its slot still on the master and not lost: enabled again, once per applied position.
    Nothing is applied twice: the slot's confirmed position is no later than what the slave
    committed (the apply worker confirms only what it has flushed; its origin records the
    master's position with each applied commit, and a restarted worker asks the walsender to
    resume from that origin), and the walsender sends only what follows;
    nothing is skipped either (the slot held every change since). Disabled again with no
    transaction applied since (the subscription's origin where it was: a real apply error),
    the next run hands off afresh."""
    logical.enable_subscription(cur, SUBSCRIPTION)
    session.commit(admin)
    update_control(settings, re_enabled=re_enabled(sub['slot'], sub['applied']))
    logger.warning('%s', action.reason)


def _keep_subscription(settings: Settings, master_ip: str, admin, cur) -> None:
    """Outside a hand-off: the subscription's owner, that role's password and the
    subscription's connection are what the hand-off left (owner.keep); someone else's change
    is mailed once. Fails when the role's pg_hba.conf line is missing."""
    kept = owner.keep(cur, settings, SUBSCRIPTION, access.subscription_conninfo(settings,
                                                                                master_ip))
    session.commit(admin)
    if kept.restart:
        logical.restart_apply_worker(cur, SUBSCRIPTION)
        session.commit(admin)
    for said in kept.changes:
        logger.warning('%s', said)
    for said in kept.tampered:
        logger.error('%s', said)
    if kept.tampered:
        mail_once(settings, mailed(settings, 'mailed_tampering'), '; '.join(kept.tampered),
                  TAMPERED_SUBJECT,
                  f'{JOB.name} found on this slave what only the subscription\'s owner, or a '
                  'trigger the apply worker ran, could have changed:\n\n'
                  + ''.join(f'- {said}\n' for said in kept.tampered)
                  + '\nWhoever holds the master can put such triggers on the copied tables. '
                  f'See {settings.paths.log_file}.\n')
    missing = owner.hba_missing(settings)
    if missing:
        raise StreamError(missing)


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
        owner.lock(cur, settings, login=False)  # no longer a slave that streams
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
              control: Control) -> str:
    logger.info('hand-off: %s', action.reason)
    def guard():
        return no_failover_since(settings, control.failover_fence)
    try:
        result, slot = hand_off(settings, master_ip, admin, sub, guard=guard)
    except SlotDropped as e:  # a fallback copy came first: its snapshot is later, keep it
        logger.warning('%s', e)
        result, slot = hand_off(settings, master_ip, _admin(settings), sub, guard=guard)
    # what was read before the hand-off is cleared, unless the failover or a pause has
    # written something since
    update_control(settings, expect={'disabled_by': control.disabled_by,
                                     'request': control.request},
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
        mail_once(settings, mailed(settings, 'mailed_hand_off'), action.reason, UNPLANNED_SUBJECT,
                  f'{JOB.name} found the continuous replication broken: {action.reason}.'
                  f'\n\nThe slave was copied afresh from the master {master_ip} and streams '
                  f'again ({sentence}).\n\nSee {settings.paths.log_file}.\n')
    return slot


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
    mail_once(settings, mailed(settings, 'mailed'), error.split(':', 1)[0], JOB.mail_subject,
              f'{JOB.name} failed on this slave:\n\n{error}\n\nIt tries again every minute; this '
              f'mail is not repeated while it fails the same way.\nSee {settings.paths.log_file}.\n')
