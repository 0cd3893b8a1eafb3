"""The stream's control record on the slave, kept between runs of wazo-ha-stream and written by
the failover and by pause too, under its own lock (the three may write at once): who disabled
the subscription, a hand-off asked for, the failures last mailed, why it does not stream (the
master copies hourly meanwhile). Read and written here only."""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator

from ..adapters.system import KeyStore, read_state, single_instance, write_state
from ..decisions.stream import BY_FAILOVER
from ..errors import WazoHaError
from ..settings import Settings

logger = logging.getLogger('wazo-ha')

CONTROL_FILE = 'stream-control.json'    # who disabled the subscription, a hand-off asked for
CONTROL_LOCK = 'wazo-ha-stream-control'


@dataclass(frozen=True)
class Control:
    disabled_by: str | None = None      # who disabled the subscription (decisions/stream BY_*)
    request: str | None = None          # why a hand-off was asked for (resume, by hand)
    mailed: str | None = None           # the failure last mailed
    mailed_hand_off: str | None = None  # the cause of the unplanned hand-off last mailed
    mailed_tampering: str | None = None  # what someone changed in the subscription, last mailed
    failover_fence: str | None = None   # a new one at each failover and pause: see no_failover_since
    # decisions.stream.re_enabled of the last subscription enabled again after an error
    re_enabled: str | None = None
    # why this slave does not stream (decisions/stream: UNREACHABLE, NOT_PAIRED...), what status
    # says of it and since when (local time, as status shows it); None while it streams
    cause: str | None = None
    cause_said: str | None = None
    cause_since: str | None = None


def control_from_dict(data, path: str) -> Control:
    """The record from its JSON form; a field that is not text is dropped (said in the log)."""
    kept = {}
    for name in (f.name for f in dataclasses.fields(Control)):
        value = data.get(name) if isinstance(data, dict) else None
        if value is not None and not isinstance(value, str):
            logger.warning('%s: %s is not text (%r): ignored', path, name, value)
            value = None
        kept[name] = value
    return Control(**kept)


def load_control(settings: Settings) -> Control:
    return control_from_dict(read_state(settings.paths.state_dir, CONTROL_FILE),
                             os.path.join(settings.paths.state_dir, CONTROL_FILE))


def update_control(settings: Settings, expect: dict | None = None, **values) -> bool:
    """Set these values; with `expect`, only if the record still holds those (else False)."""
    with single_instance(settings.paths.lock_dir, CONTROL_LOCK, wait=10):
        current = load_control(settings)
        if expect and any(getattr(current, k) != v for k, v in expect.items()):
            return False
        write_state(settings.paths.state_dir, CONTROL_FILE,
                    asdict(dataclasses.replace(current, **values)))
        return True


class FailoverCameFirst(WazoHaError):
    """A hand-off reached its commit after a failover: it rolls back."""


def fence(settings: Settings, by: str = BY_FAILOVER) -> None:
    """The mark of a failover or a pause (`by`), written before it touches the database: a
    hand-off that began before it finds it changed when it commits, and rolls back (its copy,
    its sequences and its subscription). Whatever was running, the disable wins."""
    try:
        update_control(settings, disabled_by=by, failover_fence=secrets.token_hex(8))
    except (WazoHaError, OSError) as e:  # a hand-off's commit holds the lock: ended anyway
        logger.error('%s: cannot record it in %s: %s', by, CONTROL_FILE, e)


@contextmanager
def no_failover_since(settings: Settings, seen: str | None) -> Iterator[None]:
    """Held around a hand-off's commit: no failover comes in between, and none came since the
    run read the record (its fence was `seen`)."""
    with single_instance(settings.paths.lock_dir, CONTROL_LOCK, wait=10):
        if load_control(settings).failover_fence != seen:
            raise FailoverCameFirst('a failover (or a pause) came during the hand-off: its copy '
                                    'and its subscription are rolled back, the stream stays off '
                                    'while the slave serves (or until resume)')
        yield


def request_hand_off(settings: Settings, reason: str) -> None:
    """The next run hands off (wazo-ha-config resume, a schema change by hand...)."""
    update_control(settings, request=reason)


def mailed(settings: Settings, field: str) -> KeyStore:
    """One of the record's mailed keys (`mailed`, `mailed_hand_off`), for mail_once."""
    return KeyStore(lambda: getattr(load_control(settings), field),
                    lambda key: update_control(settings, **{field: key}))


def record_cause(settings: Settings, cause: str | None, said: str | None) -> None:
    """Why this slave does not stream (None: it streams); since when is kept while the cause
    stays the same."""
    current = load_control(settings)
    if cause == current.cause and said == current.cause_said:
        return
    since = current.cause_since if cause is not None and cause == current.cause else None
    if cause is not None and since is None:
        since = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime())
    update_control(settings, cause=cause, cause_said=said, cause_since=since)
