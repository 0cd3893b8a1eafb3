"""The slave's last look at the master's cluster (continuous mode): written by wazo-ha-stream,
which logs into the master, read by the failover check (no failback to a master rebuilt at the
same address: decisions/origin.failback_held) and by wazo-ha-status. A JSON state file, so that
the check never loads the database driver."""

from __future__ import annotations

import logging
import os

from ..adapters.system import KeyStore, read_state, write_state
from ..decisions.origin import Look, look_from_dict
from ..settings import Settings

logger = logging.getLogger('wazo-ha')

LOOK_FILE = 'master-origin.json'
MAILED_FILE = 'master-origin-mailed.json'   # written by the check alone


def load(settings: Settings) -> Look | None:
    """The last look; None when there is none or it is not valid (said in the log)."""
    try:
        return look_from_dict(read_state(settings.paths.state_dir, LOOK_FILE))
    except ValueError as e:
        logger.warning('%s is not a valid look at the master (%s): ignored',
                       os.path.join(settings.paths.state_dir, LOOK_FILE), e)
        return None


def save(settings: Settings, look: Look) -> None:
    write_state(settings.paths.state_dir, LOOK_FILE,
                {'master': look.master, 'system': look.system, 'recorded': look.recorded,
                 'at': look.at})


def mailed(settings: Settings) -> KeyStore:
    """The foreign master last mailed about by the check (mail_once)."""
    return KeyStore(lambda: read_state(settings.paths.state_dir, MAILED_FILE).get('mailed'),
                    lambda key: write_state(settings.paths.state_dir, MAILED_FILE,
                                            {'mailed': key}))
