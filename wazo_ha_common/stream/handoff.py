"""The hand-off from copy to stream, on the slave: a slot on the master with an exported
snapshot, the atomic copy read from that snapshot, and the subscription on that slot started
in the copy's own transaction. Every change after the snapshot is kept for the slot and
streamed; none before it is applied twice. The copy takes the slave's copy lock first: a
fallback copy of the master's hourly run (stream.master) and a hand-off never write the
slave's tables at once; its docstring says which wins and why nothing is applied twice.

Cut short anywhere (killed, link cut, either PostgreSQL stopped), the slave's transaction
rolls back: its tables and its subscription stay as they were; the slot made for it is dropped
then or, inactive, by the next run."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable, ContextManager

from ..adapters.db import catalog, logical, session
from ..decisions.replication import split_tables
from ..decisions.stream import PENDING, slot_name, subscription_refusal
from ..errors import WazoHaError
from ..decisions import origin as origin_decision
from ..replication import origin
from ..replication.compare import copied_tables, find_changes
from ..replication.nodes import Nodes
from ..replication.write import Copy, Writer
from ..settings import Settings
from . import PUBLICATION, SUBSCRIPTION, connection as access, owner

logger = logging.getLogger('wazo-ha')

APPLICATION = 'wazo-ha-stream'


class SubscriptionRefused(WazoHaError):
    """The master publishes other tables than the copied ones: nothing is subscribed."""


class SlotDropped(WazoHaError):
    """The hand-off's own slot was dropped (by the master's fallback copy) while it waited
    for the copy lock: its snapshot is older than that copy's, its copy rolled back."""


def hand_off(settings: Settings, master_ip: str, admin, subscription: dict | None,
             guard: Callable[[], ContextManager] = contextlib.nullcontext) -> tuple[Copy, str]:
    """Copy and subscribe; `admin`: the slave's superuser connection (closed here).
    Returns the copy's figures and the new slot's name. `guard()` is held around the copy's
    commit and raises to roll it back, the subscription's start with it (a failover came
    first).

    The superuser only prepares, in a transaction of its own committed before the copy: the
    owner role (stream.owner), and the new subscription, disabled, whose table list the master
    gave is checked and which is given to that role. The copy, the old subscription's drop and
    the new one's start are then one transaction of the owner role's own session: nothing the
    master wrote runs with more rights than the tables' owner has."""
    conninfo = access.subscription_conninfo(settings, master_ip)
    reader = replicator = writer = None
    slot = slot_name(time.time())
    made = pending = False
    acur = session.cursor(admin)
    try:
        reader = access.connect_master(settings, master_ip, APPLICATION)
        replicator = access.connect_replication(settings, master_ip, APPLICATION)
        to_record = _origin(admin, logical.identify_system(replicator), master_ip)
        _, snapshot = logical.create_exported_slot(replicator, slot)
        made = True
        logical.use_snapshot(reader, snapshot)
        # the reader holds the snapshot now; closed, this connection leaves the slot free for
        # the subscription's first START_REPLICATION
        session.close(replicator)
        replicator = None
        copied = _copied_names(settings, reader)
        changes, password = owner.prepare(acur, settings)
        for said in changes:
            logger.info('hand-off: %s', said)
        if logical.subscription_exists(acur, PENDING):  # left by a hand-off cut short
            logical.drop_subscription(acur, PENDING)
        logical.create_subscription(acur, PENDING, conninfo, PUBLICATION, slot, enabled=False)
        refusal = subscription_refusal(logical.subscription_relations(acur, PENDING), copied)
        if refusal:
            raise SubscriptionRefused(refusal)
        role = settings.database.subscription_owner
        logical.give_subscription(acur, PENDING, role)
        if subscription is not None and logical.subscription_owner(acur, SUBSCRIPTION) != role:
            logical.give_subscription(acur, SUBSCRIPTION, role)  # made by an older version
        if to_record:  # the first copy to this slave (see origin): the superuser writes it
            origin.write(acur, to_record, APPLICATION)
        session.commit(admin)
        pending = True
        writer = owner.connect(settings, password, APPLICATION)
        nodes = Nodes.joined(reader, writer, master_ip)
        # the new subscription starts in the copy's transaction, at its commit
        nodes.before_commit = lambda cur: logical.take_subscription(cur, PENDING, SUBSCRIPTION)
        nodes.commit_guard = guard
        result = Copy()
        started = time.monotonic()
        # one copy into the slave's tables at a time: a fallback copy of the master's hourly
        # run waits for this one, or this one for it (see stream.master: which wins)

        def begin(cur) -> None:  # also after the writer's retry rolled back
            logical.copy_lock(cur)
            if subscription is not None:  # the transaction starts by dropping the current one
                logical.drop_subscription(cur, SUBSCRIPTION)
            _slot_kept(nodes, slot)
        begin(nodes.scur)
        nodes.after_rollback = begin
        tables, result.tables_excluded = copied_tables(nodes, settings.database.excluded_tables)
        if {t.name for t in tables} != copied:  # read from the same snapshot: never
            raise WazoHaError('the copied tables changed during the hand-off: tried again at '
                              'the next run')
        changes = find_changes(nodes, tables, None)
        result.tables_unchanged = len(tables) - len(changes.tables)
        if changes:
            Writer(nodes, changes, None, result).write()
        else:
            nodes.commit_slave()
        result.duration = time.monotonic() - started
        made = pending = False   # the subscription owns the slot now
        return result, slot
    except BaseException:
        for conn in (writer, reader):
            if conn is not None:
                session.close(conn)
        writer = reader = None
        _clean_up(admin, pending)
        if made:
            _drop_quietly(settings, master_ip, slot, replicator)
        raise
    finally:
        _lock_owner(settings, admin)
        for conn in (reader, replicator, writer, admin):
            if conn is not None:
                session.close(conn)


def _slot_kept(nodes: Nodes, slot: str) -> None:
    """Right after the copy lock: the slot this hand-off made is still on the master. A
    fallback copy that held the lock before drops every slot of ours, this one too: its
    snapshot is then later than this hand-off's, and this copy, committed second, would take
    back what that one carried. Gone: rolled back (SlotDropped), handed off afresh."""
    present = slot in logical.slots(nodes.mcur, slot)
    if not present:
        session.rollback(nodes.slave)
        raise SlotDropped(f'the slot {slot} of this hand-off was dropped on the master (by its '
                          'hourly copy, which came first): this copy, from an older snapshot, '
                          'is rolled back and the hand-off made afresh')


def _origin(admin, master_system: str, master_ip: str) -> str | None:
    """A rebuilt master never wipes the slave (see origin): ForeignMasterError before any
    slot is made, or the identifier to record (None: already recorded)."""
    cur = session.cursor(admin)
    recorded = origin.read(cur)
    session.rollback(admin)   # no transaction left open
    decision = origin_decision.decide(recorded, master_system, master_ip, replace=False)
    if not decision.proceed:
        raise origin.ForeignMasterError(decision.sentence.replace(
            'run with --replace-slave', 'run xivo-master-slave-db-replication --replace-slave '
            'on the master'))
    if decision.sentence:
        logger.warning('%s', decision.sentence)
    return master_system if decision.record else None


def _copied_names(settings: Settings, reader) -> set[str]:
    """The master's copied tables, as of the hand-off's snapshot."""
    return set(split_tables(catalog.tables(session.cursor(reader)),
                            settings.database.excluded_tables)[0])


def _clean_up(admin, pending: bool) -> None:
    """A failed hand-off: the superuser's transaction rolled back, the pending subscription
    (when it was committed) dropped; else the next hand-off drops it."""
    try:
        session.rollback(admin)
        if pending:
            logical.drop_subscription(session.cursor(admin), PENDING)
            session.commit(admin)
    except session.DatabaseError as e:
        logger.warning('the subscription %s of the failed hand-off is left (%s): the next '
                       'hand-off drops it', PENDING, e)


def _lock_owner(settings: Settings, admin) -> None:
    try:
        session.rollback(admin)
        owner.lock(session.cursor(admin), settings)
        session.commit(admin)
    except session.DatabaseError as e:
        logger.warning('the role %s keeps its login until the next hand-off: %s',
                       settings.database.subscription_owner, e)


def _drop_quietly(settings: Settings, master_ip: str, slot: str, replicator) -> None:
    """The slot of a hand-off that failed: dropped now if the master answers, else by the
    next run (inactive slots of ours without a subscription are dropped)."""
    if replicator is not None:
        session.close(replicator)
    try:
        conn = access.connect_master(settings, master_ip, APPLICATION)
    except session.DatabaseError as e:
        logger.warning('the slot %s made for the failed hand-off is left on the master (%s): '
                       'the next run drops it', slot, e)
        return
    try:
        conn.autocommit = True
        logical.drop_slot(session.cursor(conn), slot)
    except session.DatabaseError as e:
        logger.warning('cannot drop the slot %s made for the failed hand-off (%s): the next run '
                       'drops it', slot, e)
    finally:
        session.close(conn)
