"""wazo-ha-config pause|resume: hold the HA cron jobs for an upgrade.

Wazo's upgrade procedure with HA: stop the HA cron jobs, upgrade the slave, then the master,
replicate by hand, start the jobs again. While paused, a job that cron starts leaves at once
(it says so in the log); the same commands started by hand run as usual, so the replication by
hand of the procedure works. Pausing also waits for the jobs already running to end, so that
nothing of ours is at work when the upgrade starts.
"""

from __future__ import annotations

import getpass
import logging
import os
import time

from . import schedule
from .jobs import SCHEDULED
from . import role
from .errors import LockBusyError, WazoHaError
from .settings import Settings
from .adapters.system import single_instance, write_atomic

logger = logging.getLogger('wazo-ha')

def pause(settings: Settings, wait: float) -> tuple[str, bool, list[str]]:
    """Record the pause (kept if already paused); then wait up to `wait` seconds for the
    running jobs. Returns (since, newly paused, the jobs still running)."""
    since = schedule.paused_since(settings.paths.state_dir)
    newly = since is None
    if newly:
        since = f"{time.strftime('%Y-%m-%d %H:%M:%S %z')} by {_who()}"
        write_atomic(schedule.pause_marker(settings.paths.state_dir), since + '\n')
        logger.info('cron jobs paused (%s)', since)
    deadline = time.monotonic() + wait
    running = []
    for job in SCHEDULED:
        try:
            with single_instance(settings.paths.lock_dir, job.name,
                                 wait=max(0.0, deadline - time.monotonic())):
                pass
        except LockBusyError:
            running.append(job.name)
    return since, newly, running


def stop_stream(settings: Settings) -> tuple[str | None, bool]:
    """On a continuous slave: the subscription stops too (the upgrade changes the schemas,
    which logical replication does not carry); resume hands off afresh. Returns what was done
    and whether it failed."""
    if not _continuous_slave(settings):
        return None, False
    from .decisions.stream import BY_PAUSE
    from .stream.failover import stop_applying
    try:
        return stop_applying(settings, BY_PAUSE), False
    except (WazoHaError, OSError) as e:
        logger.error('pause: the continuous replication could not be stopped: %s', e)
        return f'the continuous replication could not be stopped: {e}', True


def resume(settings: Settings) -> str | None:
    """Let cron start the jobs again; what the pause had recorded, or None if not paused.
    A continuous slave hands off afresh at the next wazo-ha-stream run."""
    since = schedule.paused_since(settings.paths.state_dir)
    try:
        os.unlink(schedule.pause_marker(settings.paths.state_dir))
    except FileNotFoundError:
        return None
    logger.info('cron jobs resumed (paused since %s)', since)
    if _continuous_slave(settings):
        from .stream.control import request_hand_off
        request_hand_off(settings, 'resumed after a pause')
    return since


def _continuous_slave(settings: Settings) -> bool:
    if not settings.continuous:
        return False
    try:
        return role.load(settings.paths.ha_conf).node_type == 'slave'
    except WazoHaError:
        return False


def _who() -> str:
    user = os.environ.get('SUDO_USER') or os.environ.get('USER')
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = f'uid {os.getuid()}'
    return user
