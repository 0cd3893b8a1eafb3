"""The hand-off from copy to stream, on the slave: a slot on the master with an exported
snapshot, the atomic copy read from that snapshot, and the subscription on that slot created
in the copy's own transaction. Every change after the snapshot is kept for the slot and
streamed; none before it is applied twice.

Cut short anywhere (killed, link cut, either PostgreSQL stopped), the slave's transaction
rolls back: its tables and its subscription stay as they were; the slot made for it is dropped
then or, inactive, by the next run."""

from __future__ import annotations

import logging
import time

from ..adapters.db import logical, session
from ..decisions import origin as origin_decision
from ..replication import origin
from ..replication.compare import copied_tables, find_changes
from ..replication.nodes import Nodes
from ..replication.write import Copy, Writer
from ..settings import Settings
from . import PUBLICATION, SUBSCRIPTION, connection as access
from ..decisions.stream import slot_name

logger = logging.getLogger('wazo-ha')

APPLICATION = 'wazo-ha-stream'


def hand_off(settings: Settings, master_ip: str, admin,
             subscription: dict | None) -> tuple[Copy, str]:
    """Copy and subscribe; `admin`: the slave's superuser connection (closed here).
    Returns the copy's figures and the new slot's name."""
    conninfo = access.subscription_conninfo(settings, master_ip)
    reader = replicator = None
    slot = slot_name(time.time())
    made = False
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
        nodes = Nodes.joined(reader, admin, master_ip)
        # the subscription is created in the copy's transaction, just before its commit
        nodes.before_commit = lambda cur: logical.create_subscription(
            cur, SUBSCRIPTION, conninfo, PUBLICATION, slot)
        if to_record:  # committed with the copy
            origin.write_at_commit(nodes, to_record, APPLICATION)
        result = Copy()
        started = time.monotonic()
        if subscription is not None:  # the transaction starts by dropping the current one
            logical.drop_subscription(nodes.scur, SUBSCRIPTION)
            # the writer's retry rolls back: the old subscription is back, drop it again
            nodes.after_rollback = lambda cur: logical.drop_subscription(cur, SUBSCRIPTION)
        tables, result.tables_excluded = copied_tables(nodes, settings.database.excluded_tables)
        changes = find_changes(nodes, tables, None)
        result.tables_unchanged = len(tables) - len(changes.tables)
        if changes:
            Writer(nodes, changes, None, result).write()
        else:
            nodes.commit_slave()
        result.duration = time.monotonic() - started
        made = False   # the subscription owns it now
        return result, slot
    except BaseException:
        session.close(admin)
        if made:
            _drop_quietly(settings, master_ip, slot, replicator)
        raise
    finally:
        for conn in (reader, replicator, admin):
            if conn is not None:
                session.close(conn)


def _origin(admin, master_system: str, master_ip: str) -> str | None:
    """A rebuilt master never wipes the slave (see origin): ForeignMasterError before any
    slot is made, or the identifier to record with the copy (None: already recorded)."""
    cur = session.cursor(admin)
    recorded = origin.read(cur)
    session.rollback(admin)   # no transaction left open before the subscription is dropped
    decision = origin_decision.decide(recorded, master_system, master_ip, replace=False)
    if not decision.proceed:
        raise origin.ForeignMasterError(decision.sentence.replace(
            'run with --replace-slave', 'run xivo-master-slave-db-replication --replace-slave '
            'on the master'))
    if decision.sentence:
        logger.warning('%s', decision.sentence)
    return master_system if decision.record else None


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
