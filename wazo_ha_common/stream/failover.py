"""The stream at a failover (and at a pause): the subscription disabled at once, the apply
worker stopped, the copied tables' sequences moved past their largest id (failover). The
failover and the pause win over any hand-off, the first one included: each fences first
(control.fence), then ends the transaction of any hand-off under way."""

from __future__ import annotations

import logging
import time

from ..adapters.db import catalog, logical, session
from ..decisions.replication import is_excluded
from ..decisions.stream import BY_FAILOVER
from ..errors import WazoHaError
from ..settings import Settings
from . import SUBSCRIPTION
from .control import fence
from .handoff import APPLICATION

logger = logging.getLogger('wazo-ha')

STOP_LOCK_TIMEOUT = '3s'     # the failover waits this long for a lock held by a hand-off
WORKER_STOP_WAIT = 1.0       # seconds the failover lets the apply worker stop by itself


def stop_applying(settings: Settings, by: str) -> str | None:
    """Disable the subscription (failover, pause); what was done, None when nothing was.

    On failover, once the apply worker has stopped, also move every copied table's sequence
    past the table's largest value, so that the slave's own inserts never reuse an id the
    stream brought. A hand-off holding the subscription (its copy under way) is ended rather
    than waited for: the failover must not wait for a copy."""
    if not settings.continuous:
        return None
    fence(settings, by)  # a pause too: no hand-off under way enables a subscription after it
    admin = session.admin_connect(settings.database.admin_dsn, settings.database.admin_system_user,
                                  'wazo-ha-failover')
    try:
        cur = session.cursor(admin)
        had = _disable_now(admin, cur)
        moved = []
        # a hand-off under way cannot commit any more (fenced): end it now rather than let its
        # copy hold the tables' locks, whether or not it holds the subscription
        ended = session.end_sessions(cur, APPLICATION, in_transaction=True)
        session.commit(admin)
        if ended:
            logger.warning('%s: ended %d wazo-ha-stream sessions under way (a hand-off: rolled '
                           'back)', by, ended)
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
