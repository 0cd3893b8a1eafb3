"""The phones registered on this node's Asterisk, asked with `asterisk -rx 'pjsip show
contacts'`, and the failback's wait for them to go back to the master (the decisions are in
registrations)."""

from __future__ import annotations

import logging
import time

from ..adapters.system import run
from ..decisions.registrations import PhonesWait, contacts_in, keep_waiting
from ..errors import WazoHaError

logger = logging.getLogger('wazo-ha')


def registered() -> int | None:
    """Contacts registered on this node's Asterisk; None when it cannot be asked."""
    try:
        result = run(('asterisk', '-rx', 'pjsip show contacts'), timeout=15, check=False)
    except WazoHaError as e:
        logger.warning('cannot count the registered phones: %s', e)
        return None
    return contacts_in(result.stdout)


def wait_gone(limit: float, count=registered, sleep=time.sleep, clock=time.monotonic,
              every: float = 2.0, master_answers=lambda: True) -> PhonesWait:
    """Wait up to `limit` seconds while phones are registered on this node (before a
    failback stops its telephony); given up, with master_lost, as soon as the master does
    not answer a probe (this node keeps serving: stopping would leave nobody)."""
    began = clock()
    phones = left = count()
    while keep_waiting(left, clock() - began, limit):
        sleep(min(every, max(0.0, limit - (clock() - began))))
        if not master_answers():
            return PhonesWait(phones, clock() - began, left, master_lost=True)
        now = count()
        left = left if now is None else now
    return PhonesWait(phones, clock() - began, left)
