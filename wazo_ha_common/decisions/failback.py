"""Failback episodes, decided: the record of one (Episode, checked by episode_from_dict) and
what the master does with the slave's record before a push (plan), and what a file brought
back may be once it lands on the master (landing: never the slave's say on owners, links or
special bits; applied by files/landing). Records are read and written in files/failback."""

from __future__ import annotations

import math
import stat
import time
from dataclasses import dataclass

NOTHING, BRING_BACK, SERVING = 'nothing', 'bring back', 'serving'
LATEST = 4102444800.0   # 2100-01-01 UTC: a later time in a record is a slave's lie, refused


@dataclass(frozen=True)
class Episode:
    episode: str                  # random id
    started_at: float             # wall clock, when the slave took telephony over
    ended_at: float | None = None  # when it gave telephony back; None while it serves

    @property
    def duration(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at

    def describe(self) -> str:
        """A sentence's part; never raises, whatever the times (a record a slave wrote)."""
        try:
            began = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started_at))
        except (OverflowError, OSError, ValueError):
            began = f'{self.started_at!r} (not a date)'
        if self.ended_at is None:
            return f'since {began}'
        return f'from {began} for {self.duration:.0f} s'


def episode_from_dict(data) -> Episode | None:
    """An Episode from its JSON form; None for {}; ValueError naming a wrong field."""
    if data == {}:
        return None
    if not isinstance(data, dict):
        raise ValueError(f'not a JSON object but {type(data).__name__}')
    episode = data.get('episode')
    if not isinstance(episode, str) or not episode or not episode.isalnum() or len(episode) > 64:
        raise ValueError(f'episode: not an id: {episode!r}')
    for name in ('started_at', 'ended_at'):
        value = data.get(name)
        if value is None and name == 'ended_at':
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or not 0 <= value <= LATEST:
            raise ValueError(f'{name}: not a time: {value!r}')
    if data.get('ended_at') is not None and data['ended_at'] < data['started_at']:
        raise ValueError('ended_at: before started_at')
    return Episode(episode, float(data['started_at']),
                   None if data.get('ended_at') is None else float(data['ended_at']))


def plan(record: Episode | None, brought_back: str | None) -> str:
    """What the master does before pushing: NOTHING (no episode, or already brought back),
    BRING_BACK (an ended episode not brought back yet) or SERVING (the slave serves now:
    pushing would overwrite what it records, and it is too early to bring anything back)."""
    if record is None:
        return NOTHING
    if record.ended_at is None:
        return SERVING
    return NOTHING if record.episode == brought_back else BRING_BACK


# what lands on the master

SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX


@dataclass(frozen=True)
class Landing:
    keep: bool          # False: removed (a link, a device, a fifo, a socket)
    uid: int = -1
    gid: int = -1
    mode: int = 0       # permission bits, without set-uid, set-gid nor sticky


def landing(mode: int, directory_uid: int, directory_gid: int) -> Landing:
    """A regular file or a directory brought back gets the owner and group of the master
    directory it lands in; its permission bits are the slave's only within bounds: a directory
    at most 0755 and at least 0700, a file at most 0644 and at least 0600 (no world-write, no
    set-uid, set-gid nor sticky bit). Anything else is removed."""
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return Landing(False)
    return Landing(True, directory_uid, directory_gid, landed_mode(mode))


def landed_mode(mode: int) -> int:
    """The permission bits an entry keeps on the master (the module's top directory too)."""
    if stat.S_ISDIR(mode):
        return stat.S_IMODE(mode) & 0o755 | 0o700
    return stat.S_IMODE(mode) & 0o644 | 0o600
