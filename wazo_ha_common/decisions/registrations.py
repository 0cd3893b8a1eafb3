"""Decisions about the phones registered on this node (pure): how many Asterisk holds, and
when a failback stops waiting for them to go back to the master."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# `asterisk -rx 'database show registrar/contact'` (Asterisk's main/db.c, database show): one
# `KEY : VALUE` line per entry, then `N results found.`. Asterisk keeps the contacts phones
# register in astdb under registrar/contact (res_pjsip/location.c,
# ast_sip_initialize_sorcery_location: contact -> astdb "registrar"), keyed `AOR;@HASH`; the
# permanent contacts of an AOR's `contact=` (trunks) live in memory only and are not there.
# `pjsip show contacts` lists both, and the trunks' never leave: not counted from it.
ENTRY = re.compile(r'^/registrar/contact/\S+?\s*:', re.MULTILINE)
FOUND = re.compile(r'^(\d+) results? found\.\s*\Z', re.MULTILINE)


def contacts_in(output: str) -> int | None:
    """The number of registered (dynamic) contacts in Asterisk's answer; None when it is not
    such a list (Asterisk not running, another error)."""
    if not FOUND.search(output.strip() + '\n'):
        return None
    return len(ENTRY.findall(output))


def wait_limit(fallback_timeout: float, margin: float) -> float:
    """The longest a failback waits: a phone registered here checks its primary (the master)
    every fallback timeout and registers there when it answers. Its stale registration here
    is not waited for: it stays until it expires, and nobody calls through a stopped slave."""
    return fallback_timeout + margin


@dataclass(frozen=True)
class Waiting:
    """A failback waiting for the phones, kept in the check's state across runs."""
    began: float            # wall clock (time.time()) when the master was decided up again
    phones: int             # registered here then

    def as_dict(self) -> dict:
        return {'began': self.began, 'phones': self.phones}


def waiting_from(data: object) -> Waiting | None:
    """The wait recorded by an earlier run; None when there is none or it is not valid."""
    if not isinstance(data, dict):
        return None
    began, phones = data.get('began'), data.get('phones')
    if isinstance(began, bool) or not isinstance(began, (int, float)) \
            or not math.isfinite(began) or isinstance(phones, bool) or not isinstance(phones, int) or phones < 0:
        return None
    return Waiting(float(began), phones)


@dataclass(frozen=True)
class PhonesWait:
    phones: int | None      # registered here when the wait began (None: could not count)
    waited: float           # seconds
    left: int | None        # still registered when the wait ended (None: could not count)

    def sentence(self, limit: float) -> str:
        if self.phones is None:
            return ('failback phones: cannot count the phones registered here: telephony '
                    'stopped without waiting')
        if not self.phones:
            return 'failback phones: none registered here: nothing to wait for'
        if self.left is None:
            return (f'failback phones: Asterisk stopped answering after {self.waited:.0f} s '
                    f'of waiting for {self.phones} phones: wait ended')
        if not self.left:
            return (f'failback phones: waited {self.waited:.0f} s for {self.phones} phones to '
                    'register on the master again: none left here')
        return (f'failback phones: waited {self.waited:.0f} s (the limit, [check] '
                f'failback_phones_timeout + failback_phones_margin = {limit:g} s) for '
                f'{self.phones} phones: {self.left} still registered here (stale once they '
                'went back to the master at their fallback timeout)')


def step(waiting: Waiting | None, left: int | None, now: float,
         limit: float) -> tuple[Waiting | None, PhonesWait | None]:
    """One look at the phones during a failback: (the wait to keep, None) to wait on, or
    (None, how it ended) to stop the telephony now. Counted none, not countable (Asterisk
    is not running: nothing to wait for), or the limit reached since the wait began."""
    if waiting is None:
        if not left:
            return None, PhonesWait(left, 0.0, left)
        return Waiting(now, left), None
    waited = max(0.0, now - waiting.began)
    if left is None or left == 0 or waited >= limit:
        return None, PhonesWait(waiting.phones, waited, left)
    return waiting, None
