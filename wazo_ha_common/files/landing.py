"""Files brought back from the slave (failback pull, voicemail merge), settled on the master
as decisions.failback.landing says: through descriptors, following no link."""

from __future__ import annotations

import logging
import os
import stat

from ..adapters.system import open_directory
from ..decisions.failback import landed_mode, landing

logger = logging.getLogger('wazo-ha')


def settle_tree(top: str) -> int:
    """After a pull into `top`: walk its tree through directory descriptors (no link followed,
    none entered) and settle each regular file and directory as `landing` says: what this run
    brought (root's: rsync runs without -o -g) gets the owner of the directory it stands in,
    and every entry the bounded permission bits, `top` itself included (rsync -p gives it the
    slave's bits). A file with more than one link is left alone (it is not one rsync made:
    settling it would hand over whatever else it is). Returns how many entries were changed.

    The names rsync prints (%n) are not used: they are escaped (a newline as \\#012, other
    bytes too in a C locale), so such a file would not be found by them."""
    fd = open_directory(top)
    try:
        st = os.fstat(fd)
        changed = 0
        if stat.S_IMODE(st.st_mode) != landed_mode(st.st_mode):
            os.fchmod(fd, landed_mode(st.st_mode))
            changed += 1
        return changed + _settle_directory(fd, top)
    finally:
        os.close(fd)


def _settle_directory(dir_fd: int, path: str) -> int:
    where = os.fstat(dir_fd)
    changed = 0
    with os.scandir(dir_fd) as entries:
        names = [entry.name for entry in entries]
    for name in names:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            continue  # the pull brings no link nor special file (--no-links ...): not its own
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            logger.warning('failback: %s has %d links: left as it is', os.path.join(path, name),
                           st.st_nlink)
            continue
        is_dir = stat.S_ISDIR(st.st_mode)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | \
            (os.O_DIRECTORY if is_dir else 0)
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except OSError as e:
            logger.warning('failback: %s not settled: %s', os.path.join(path, name), e)
            continue
        try:
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or \
                    (not is_dir and now.st_nlink > 1):
                continue  # replaced or linked meanwhile by whoever writes the directory
            decision = landing(now.st_mode, where.st_uid, where.st_gid)
            if now.st_uid == 0 and (now.st_uid, now.st_gid) != (decision.uid, decision.gid):
                os.fchown(fd, decision.uid, decision.gid)
                changed += 1
            if stat.S_IMODE(now.st_mode) != decision.mode:
                os.fchmod(fd, decision.mode)
                changed += 1
            if is_dir:
                changed += _settle_directory(fd, os.path.join(path, name))
        finally:
            os.close(fd)
    return changed
