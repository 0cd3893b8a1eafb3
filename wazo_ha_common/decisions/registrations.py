"""Decisions about the phones registered on this node (pure): how many Asterisk lists, and
when a failback stops waiting for them to go back to the master."""

from __future__ import annotations

import re
from dataclasses import dataclass

# `asterisk -rx 'pjsip show contacts'` (Asterisk's res_pjsip/pjsip_cli.c and location.c): a
# header line `Contact:  <Aor/ContactUri...> <Hash....> <Status> <RTT(ms)..>`, a separator,
# then one `Contact:  AOR/URI HASH STATUS RTT` line per contact; `No objects found.` if none
CONTACT = re.compile(r'^\s*Contact:\s+(?!<)\S+/\S+', re.MULTILINE)
HEADER = re.compile(r'^\s*Contact:\s+<Aor/ContactUri', re.MULTILINE)


def contacts_in(output: str) -> int | None:
    """The number of contacts in Asterisk's answer; None when it is not such a list (Asterisk
    not running, another error)."""
    if re.search(r'^\s*No objects found\.', output, re.MULTILINE):
        return 0
    if not HEADER.search(output):
        return None
    return len(CONTACT.findall(output))


def wait_limit(max_expiry: float, margin: float) -> float:
    """The longest a failback waits: a phone that went back to the master without removing
    its registration here leaves it to expire, at most max_expiry after its last renewal."""
    return max_expiry + margin


def keep_waiting(left: int | None, waited: float, limit: float) -> bool:
    """Wait on while phones are registered here (a count we could not get keeps the last
    one) and the limit is not reached."""
    return bool(left) and waited < limit


@dataclass(frozen=True)
class PhonesWait:
    phones: int | None      # registered here when the wait began (None: Asterisk not asked)
    waited: float           # seconds
    left: int | None        # still registered when the telephony stopped
    master_lost: bool = False  # the master stopped answering meanwhile: do not stop

    def sentence(self, limit: float) -> str:
        if self.master_lost:
            return (f'failback phones: the master stopped answering after {self.waited:.0f} s '
                    f'of waiting for {self.phones} phones: telephony NOT stopped, the next run '
                    'decides again')
        if self.phones is None:
            return ('failback phones: cannot count the phones registered here: telephony '
                    'stopped without waiting')
        if not self.phones:
            return 'failback phones: none registered here: nothing to wait for'
        if not self.left:
            return (f'failback phones: waited {self.waited:.0f} s for {self.phones} phones to '
                    'register on the master again: none left here')
        return (f'failback phones: waited {self.waited:.0f} s (the limit, [sip] max_expiry + '
                f'[check] failback_phones_margin = {limit:g} s) for {self.phones} phones: '
                f'{self.left} still registered here, unreachable until they register on the '
                'master')
