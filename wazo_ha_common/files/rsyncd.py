"""The rsync daemon on the slave: the configuration the master's key is bound to (its modules,
chrooted, and the name converter), kept in step with the settings by the check and by
wazo-ha-config."""

from __future__ import annotations

import os
import shlex
import sys

from . import rsync_names
from ..decisions import rsync_modules
from ..settings import Settings
from ..adapters.system import read_text, write_atomic


def daemon_modules(settings: Settings) -> list[rsync_modules.Module]:
    return rsync_modules.modules(settings.sync.directories, settings.sync.failback_directories,
                                 settings.sync.record_dir)


def daemon_config_text(settings: Settings) -> str:
    converter = f'{shlex.quote(sys.executable)} {shlex.quote(os.path.abspath(rsync_names.__file__))}'
    return rsync_modules.render_config(daemon_modules(settings), converter)


def apply_daemon_config(settings: Settings, slave: bool) -> list[str]:
    """On a slave, the rsync daemon configuration the master's key is bound to, and every
    module's directory (a chroot needs it); elsewhere none (the key then opens nothing).
    Returns what changed."""
    path = settings.sync.rsyncd_conf
    changes = []
    if not slave:
        if os.path.exists(path):
            os.unlink(path)
            changes.append(f'{path}: removed (the master\'s key opens nothing here now)')
        return changes
    for module in daemon_modules(settings):
        if not os.path.isdir(module.path):
            os.makedirs(module.path, mode=0o755)
            changes.append(f'{module.path}: created (a module of the rsync daemon)')
    text = daemon_config_text(settings)
    if read_text(path) != text:
        write_atomic(path, text, mode=0o644)
        changes.append(f'{path}: the master\'s key may write ' + ', '.join(
            settings.sync.directories) + ' and read ' + ', '.join(settings.sync.failback_directories))
    return changes
