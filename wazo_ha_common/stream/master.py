"""Continuous mode on the master, run by each hourly xivo-master-slave-db-replication: the
publication kept in step, then either the stream in force (the slave's sequences moved
forward, its slot checked) or, when it is not, the atomic copy as in hourly mode: never worse
than hourly.

Which copy wins, and why nothing is applied twice. A fallback copy and the slave's hand-off
(wazo-ha-stream) may run at once; both write the slave's tables, each in one transaction that
first takes the same transaction lock on the slave (logical.copy_lock): one waits for the other
to commit or roll back. The fallback, once it holds that lock and before the master's snapshot
is taken, drops every slot of ours on the master:
- the hand-off committed first: its slot is dropped (inactive yet) and the fallback's copy
  replaces the slave's rows, or its apply worker already streams on it (active: the slot cannot
  be dropped) and the fallback copies nothing (StreamResumed): the stream is in force;
- the hand-off's slot was made before the drop and it comes second: its snapshot is older
  than the copy's, so committed it would take back what the copy carried; once it holds the
  lock it finds its slot gone, rolls back and hands off afresh at once (stream.handoff: new
  slot, new snapshot, later than the copy's);
- the hand-off's slot was made after the drop: its snapshot is later than the fallback's and
  its copy, committed second, replaces the rows the fallback wrote; it streams from there.
A stream that resumes after a fallback copy never finds the slot it had (dropped before the
copy's snapshot): whatever the copy carried, no stream applies again; the slave hands off
afresh once it reaches the master."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

from ..adapters.db import catalog, logical, session
from ..adapters.system import KeyStore, mail_once, read_state, send_mail, write_state
from ..decisions.stream import (DROPPED_CAUSES, UNMAILED_CAUSES, InForce, MasterView,
                                first_hand_off, in_force, slave_slot)
from ..replication.compare import copied_tables, sequences_forward
from ..replication.job import NAME, Result, guard_slave
from ..replication.nodes import Nodes
from ..settings import Settings
from . import SLOT_PREFIX, publication

logger = logging.getLogger('wazo-ha')

FALLBACK_FILE = 'stream-fallback.json'   # the cause in force, since when, the last one mailed
FIRST_FILE = 'stream-first-hand-off.json'   # when the pair was first found paired, a slot seen
# whether a stream may have written the slave since the last fallback copy compared every table
# by content (a slot of the slave's seen): when not, the copy trusts the tracking record
WRITTEN_FILE = 'stream-written.json'
SLOT_WAIT = 10.0    # seconds an inactive slot is watched (an apply worker restarting)
FALLBACK_SUBJECT = 'Slave replication: hourly copies, continuous replication is not in force'
RESUMED_SUBJECT = 'Slave replication: continuous replication is in force again'
APPLICATION = 'wazo-ha-fallback'


class StreamResumed(Exception):
    """The slave's slot became active while the fallback prepared its copy: no copy."""


def reconcile(settings: Settings, slave_ip: str, result: Result,
              copy: Callable[[Callable[[Nodes], None], Callable[[], bool]], None]) -> None:
    """Continuous mode: the publication in step with the copied tables; then, when the stream
    is in force, the slave's sequences moved forward to the master's (logical replication does
    not carry them; never back: the slave may be serving); when it is not, `copy(prepare,
    trust)`, `trust()` read after `prepare`: whether the tracking record may be trusted (no
    stream may have written the slave since the last copy that compared every table):
    the copy as in hourly mode, the slave's slots dropped first (see the module's docstring)."""
    try:
        result.publication = publication.keep_in_step(settings)
        unkept = None
    except session.DatabaseError as e:  # the copy below needs no publication: never worse
        unkept = e
    for line in result.publication:
        logger.info('publication: %s', line)
    state = read_state(settings.paths.state_dir, FALLBACK_FILE)
    dropped = state.get('dropped')
    dropped = (tuple(dropped) if isinstance(dropped, list) and len(dropped) == 2
               and all(isinstance(x, str) for x in dropped) else None)
    view = _view(settings, dropped)
    first = read_state(settings.paths.state_dir, FIRST_FILE)
    record, awaiting = first_hand_off(first, view.paired, bool(view.slots), time.time(),
                                      settings.database.first_hand_off_wait)
    if record != first:
        write_state(settings.paths.state_dir, FIRST_FILE, record)
    view = dataclasses.replace(view, awaiting=awaiting)
    verdict = in_force(view)
    # no record (an upgrade, a state lost): a stream may have written the slave
    written = read_state(settings.paths.state_dir, WRITTEN_FILE).get('written') is not False
    if view.slots and not written:
        write_state(settings.paths.state_dir, WRITTEN_FILE, {'written': True})
    written = written or bool(view.slots)
    if not view.slots and result.replace_slave:
        # --replace-slave (a rebuilt master): the new cluster is recorded with the sequences'
        # commit, and the slave hands off afresh once it does not serve; never a copy over a
        # slave that may serve (--force comes with it)
        _streaming(settings, slave_ip, result, None)
        return
    if verdict.streaming:
        if unkept is not None:
            raise unkept
        _streaming(settings, slave_ip, result, verdict.slot)
        _resumed(settings, slave_ip, state)
        return
    since = state.get('since') if state.get('cause') == verdict.cause else None
    since = since if isinstance(since, (int, float)) else time.time()
    result.fallback = {'cause': verdict.cause, 'said': verdict.said, 'fix': verdict.fix,
                       'since': since}
    kept = {k: v for k, v in state.items() if k != 'dropped' or not view.slots}
    write_state(settings.paths.state_dir, FALLBACK_FILE,
                {**kept, 'cause': verdict.cause, 'said': verdict.said, 'since': since})
    if unkept is not None:
        logger.error('publication: %s (the hourly copy below does not need it)', unkept)
    logger.warning('continuous replication is not in force for %s: %s (since %s); this run '
                   'copies as in hourly mode. To stream: %s', slave_ip, verdict.said,
                   _when(since), verdict.fix)
    dropped_now: list[str] = []
    try:
        copy(lambda nodes: dropped_now.extend(_before_copy(settings, nodes, verdict)),
             lambda: not written and not dropped_now)
    except StreamResumed as e:
        logger.info('%s', e)
        result.fallback = None
        _streaming(settings, slave_ip, result, None)
        return
    # every slot was dropped before this copy's snapshot, and a copy that could not trust the
    # tracking record compared every table: the record is exact again; a hand-off since makes
    # a slot, seen by the next run (or by its _before_copy) before any copy trusts the record
    write_state(settings.paths.state_dir, WRITTEN_FILE, {'written': False})
    _mail(settings, slave_ip, verdict, since)


def _view(settings: Settings, dropped: tuple[str, str] | None) -> MasterView:
    """What the master reads of the stream, as its superuser; an inactive slot is watched for
    SLOT_WAIT (its apply worker restarts within seconds after a hand-off or a new owner)."""
    d = settings.database
    admin = session.admin_connect(d.admin_dsn, d.admin_system_user, APPLICATION)
    try:
        cur = session.cursor(admin)
        level = logical.wal_level(cur)
        login = logical.role_login(cur, d.stream_user)
        deadline = time.monotonic() + SLOT_WAIT
        while True:
            slots = logical.slots(cur, SLOT_PREFIX)
            session.rollback(admin)
            slot = slave_slot(slots)
            if slot is None or slots[slot]['active'] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        session.close(admin)
    return MasterView(wal_level=level, paired=bool(login and login[1]), slots=slots,
                      dropped=dropped)


def _before_copy(settings: Settings, nodes: Nodes, verdict: InForce) -> list[str]:
    """In the copy's slave transaction, before the master's snapshot: wait for any hand-off
    under way (the copy lock), then drop every slot of ours on the master; an active one means
    the slave streams again: StreamResumed (the copy rolls back, nothing written), as does one
    that becomes active between the listing and its drop (a subscription reconnecting). A slot
    really dropped for a slot-side cause (DROPPED_CAUSES) records that cause, said until the
    slave hands off again; any other cause is read afresh at each run. Returns the slots
    dropped (a stream may have written the slave: the copy then compares every table)."""
    logical.copy_lock(nodes.scur)
    d = settings.database
    dropped = []
    admin = session.admin_connect(d.admin_dsn, d.admin_system_user, APPLICATION)
    try:
        admin.autocommit = True
        cur = session.cursor(admin)
        for name, state in sorted(logical.slots(cur, SLOT_PREFIX).items()):
            if state['active']:
                nodes.rollback_slave()
                raise StreamResumed(f'the slave streams again on slot {name}: no hourly copy '
                                    'needed')
            try:
                logical.drop_slot(cur, name)
            except session.ObjectInUse:  # became active since it was listed (55006)
                nodes.rollback_slave()
                raise StreamResumed(f'the slave streams again on slot {name} (it became active '
                                    'while the hourly copy prepared): no hourly copy needed')
            except session.ObjectMissing:  # dropped since it was listed (the slave's stale
                pass                           # slots after its hand-off): gone all the same
            dropped.append(name)
            write_state(settings.paths.state_dir, WRITTEN_FILE, {'written': True})
            if verdict.cause in DROPPED_CAUSES:
                write_state(settings.paths.state_dir, FALLBACK_FILE,
                            {**read_state(settings.paths.state_dir, FALLBACK_FILE),
                             'dropped': [verdict.cause, verdict.said]})
            logger.warning('dropped the slot %s of the slave before the hourly copy: a stream '
                           'that resumes must not apply again what the copy carries (the slave '
                           'hands off afresh once it can)', name)
    finally:
        session.close(admin)
    return dropped


def _streaming(settings: Settings, slave_ip: str, result: Result, slot: str | None) -> None:
    with Nodes(settings, slave_ip, NAME) as nodes:
        guard_slave(settings, nodes, slave_ip, catalog.horizon(nodes.mcur)['system'],
                    result.replace_slave)   # recorded with the sequences' commit below
        tables, result.tables_excluded = copied_tables(nodes, settings.database.excluded_tables)
        result.tables_unchanged = len(tables)
        forward = sequences_forward(nodes, {t.name for t in tables})
        for seq, state in forward.items():
            catalog.restart_sequence(nodes.scur, seq, state)
        nodes.commit_slave()
        result.sequences_set = len(forward)
        slots = logical.slots(nodes.mcur, SLOT_PREFIX)
        nodes.end_read()
    if not slots and result.replace_slave:  # a rebuilt master has none: the slave hands off
        result.stream = {}
        return
    name = slot if slot in slots else slave_slot(slots)
    if name is not None:
        result.stream = {'slot': name, **slots[name]}


def _mailed(settings: Settings) -> KeyStore:
    def save(key):
        write_state(settings.paths.state_dir, FALLBACK_FILE,
                    {**read_state(settings.paths.state_dir, FALLBACK_FILE), 'mailed': key})
    return KeyStore(lambda: read_state(settings.paths.state_dir, FALLBACK_FILE).get('mailed'),
                    save)


def _mail(settings: Settings, slave_ip: str, verdict: InForce, since: float) -> None:
    """Root is mailed once per cause, with the fix (a cause that passes by itself is not)."""
    if verdict.cause in UNMAILED_CAUSES:
        return
    mail_once(settings, _mailed(settings), verdict.cause, FALLBACK_SUBJECT,
              f'{NAME} found the continuous replication to the slave {slave_ip} not in force '
              f'since {_when(since)}: {verdict.said}.\n\nUntil it is, this master copies its '
              'database to the slave every hour, as in hourly mode (a failover loses at most '
              f'the last hour of changes).\n\nTo stream again: {verdict.fix}.\n\n'
              f'See {settings.paths.log_file} and wazo-ha-status on both nodes.\n')


def _resumed(settings: Settings, slave_ip: str, state: dict) -> None:
    """The stream is in force again: said once (and mailed when its loss was)."""
    if not state.get('cause'):
        return
    write_state(settings.paths.state_dir, FALLBACK_FILE, {})
    logger.info('continuous replication to %s is in force again (it was not: %s)', slave_ip,
                state.get('said'))
    if state.get('mailed'):
        send_mail(settings.mail.sendmail, settings.mail.recipient, RESUMED_SUBJECT,
                  f'{NAME} found the continuous replication to the slave {slave_ip} in force '
                  f'again (it was not since {_when(state.get("since"))}: {state.get("said")}). '
                  'The hourly copies stop.\n')


def _when(ts) -> str:
    if not isinstance(ts, (int, float)):
        return 'an unknown time'
    return time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(ts))
