"""Files brought back from the slave (failback pull, voicemail merge), settled on the master
as decisions.failback.landing says: through descriptors, following no link."""

from __future__ import annotations

import contextlib
import logging
import os
import stat

from ..adapters.system import open_directory
from ..decisions.failback import landing

logger = logging.getLogger('wazo-ha')


def settle(top: str, relative: list[str]) -> list[str]:
    """Apply `landing` to each entry (paths relative to `top`, parents before their children,
    as rsync lists them); returns the relative paths of the entries removed."""
    removed = []
    for rel in relative:
        rel = rel.rstrip('/')
        if not rel or rel == '.':
            continue
        parent, name = os.path.split(os.path.join(top, rel))
        try:
            dir_fd = open_directory(parent)
        except OSError as e:
            logger.warning('failback: %s not settled (its directory: %s)', rel, e)
            continue
        try:
            if _settle_one(dir_fd, name):
                removed.append(rel)
                logger.warning('failback: %s was neither a regular file nor a directory: removed',
                               os.path.join(top, rel))
        finally:
            os.close(dir_fd)
    return removed


def _settle_one(dir_fd: int, name: str) -> bool:
    """True when the entry was removed."""
    where = os.fstat(dir_fd)
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    decision = landing(st.st_mode, where.st_uid, where.st_gid)
    if not decision.keep:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
        return True
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | \
        (os.O_DIRECTORY if stat.S_ISDIR(st.st_mode) else 0)
    fd = os.open(name, flags, dir_fd=dir_fd)
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return False  # replaced meanwhile by whoever writes the directory: theirs
        os.fchown(fd, decision.uid, decision.gid)
        os.fchmod(fd, decision.mode)
    finally:
        os.close(fd)
    return False
