"""The slave's slots on the master, seen from the slave: the lag probe, and the slots left by
earlier hand-offs dropped."""

from __future__ import annotations

import logging
import time

from ..adapters.db import logical, session
from ..decisions.stream import LAG_WAIT, SLOT_PREFIX, stale_slots

logger = logging.getLogger('wazo-ha')


def lag(mcur, master, slot: str) -> float | None:
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


def drop_stale(mcur, master, current: str, details: dict) -> None:
    for name in stale_slots(logical.slots(mcur, SLOT_PREFIX), current):
        try:
            logical.drop_slot(mcur, name)
            session.commit(master)
            logger.info('dropped the slot %s left on the master by an earlier hand-off', name)
        except session.DatabaseError as e:
            session.rollback(master)
            logger.warning('cannot drop the slot %s on the master yet: %s', name, e)
