"""The phones registered on this node's Asterisk, asked with `asterisk -rx 'database show
registrar/contact'` (the decisions are in registrations)."""

from __future__ import annotations

import logging

from ..adapters.system import run
from ..decisions.registrations import contacts_in
from ..errors import WazoHaError

logger = logging.getLogger('wazo-ha')

COMMAND = ('asterisk', '-rx', 'database show registrar/contact')


def registered() -> int | None:
    """Contacts registered by phones on this node's Asterisk (not the trunks' permanent
    ones); None when it cannot be asked."""
    try:
        result = run(COMMAND, timeout=15, check=False)
    except WazoHaError as e:
        logger.warning('cannot count the registered phones: %s', e)
        return None
    return contacts_in(result.stdout)
