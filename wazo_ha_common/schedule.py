"""Once per cron period, whichever cron file starts a job.

On a Wazo node, wazo-sysconfd writes its own /etc/cron.d/xivo-ha-master and xivo-ha-slave
beside our /etc/cron.d/wazo-ha: the same job is then started twice in the same minute. A run
started by cron claims its period (the wall-clock minute or hour); a second cron start in
the same period leaves quietly. Runs started by hand are never held back."""

from __future__ import annotations

import fcntl
import logging
import os

logger = logging.getLogger('wazo-ha')

# written by wazo-ha-config pause: cron-started jobs leave at once (see pause)
PAUSE_FILE = 'cron-paused'


def same_period(last_start: float | None, now: float, period: int) -> bool:
    return last_start is not None and int(last_start // period) == int(now // period)


def started_by_cron(pid: int | None = None) -> bool:
    """Whether cron is an ancestor of this process (its comm is cron)."""
    pid = pid or os.getpid()
    for _ in range(64):
        try:
            with open(f'/proc/{pid}/stat') as f:
                stat = f.read()
        except OSError:
            return False
        comm = stat[stat.index('(') + 1:stat.rindex(')')]
        if comm == 'cron' and pid != os.getpid():
            return True
        pid = int(stat[stat.rindex(')') + 2:].split()[1])  # ppid
        if pid <= 1:
            return False
    return False


def claim(state_dir: str, job: str, period: int, now: float) -> bool:
    """True if this run may go on: no other cron run of the job started in this period."""
    os.makedirs(state_dir, exist_ok=True)
    path = os.path.join(state_dir, f'{job}.cron-period')
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.pread(fd, 64, 0).decode(errors='replace').strip()
        try:
            last = float(raw) if raw else None
        except ValueError:
            last = None
        if same_period(last, now, period):
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'{now}\n'.encode(), 0)
        return True
    finally:
        os.close(fd)


def pause_marker(state_dir: str) -> str:
    return os.path.join(state_dir, PAUSE_FILE)


def paused_since(state_dir: str) -> str | None:
    """What wazo-ha-config pause recorded (when, by whom), or None when cron jobs run."""
    try:
        with open(pause_marker(state_dir), encoding='utf-8', errors='replace') as f:
            return f.readline().strip() or 'an unknown time'
    except FileNotFoundError:
        return None
    except OSError as e:  # unreadable: the jobs run (a wrong pause would stop failover)
        logger.warning('cannot read %s: %s; the cron jobs run', pause_marker(state_dir), e)
        return None
