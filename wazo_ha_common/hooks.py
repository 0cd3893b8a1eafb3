"""What the commands pass down to the domains below them (a function passed down rather than
an import that runs up): the failover check imports neither the stream nor wazo-sync, the
replication run not the stream. In hourly mode the stream's code is not even loaded; each
command loads only what its own hooks need (the replication run neither the failover check nor
its HTTP probes)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, ContextManager

from .settings import Settings

if TYPE_CHECKING:  # each command loads the code of its own hooks only
    from .failover.check import Hooks
    from .replication.job import Result


def for_check(settings: Settings) -> Hooks:
    """The rsync daemon configuration is not the check's: the converge writes it (one
    writer), every minute on every role."""
    from .failover.check import Hooks  # the check's command only
    hooks = Hooks()
    return dataclasses.replace(hooks, before_serving=_stop_stream) if settings.continuous \
        else hooks


def _stop_stream(settings: Settings) -> None:
    from .stream import failover  # continuous mode only
    failover.before_serving(settings)


def reconcile(settings: Settings, slave_ip: str, result: Result, copy: Callable) -> None:
    """Continuous mode, on the master: the replication run's part of the stream, or the copy
    as in hourly mode when the stream is not in force."""
    from .stream import master  # continuous mode only
    master.reconcile(settings, slave_ip, result, copy)


def origin_before_sync(settings: Settings, slave_ip: str, replace: bool, by: str,
                       dry_run: bool) -> str | None:
    """On the master, before wazo-sync pushes: the slave copied from this master cluster (or
    `replace`); ForeignMasterError otherwise (see replication.origin)."""
    from .replication import origin  # the database driver: never loaded by the check
    return origin.check_before_sync(settings, slave_ip, replace, by, dry_run)


def slave_serving(settings: Settings) -> ContextManager[Callable[[str], str | None]]:
    """On the master, for one replication run: serving(slave_ip) says why the run must leave
    the slave's database alone now (it serves telephony, or that cannot be told: its failback
    record), None when it may write; the run's reads share one SSH connection."""
    from .files import sync  # read through the key of wazo-sync -i
    return sync.serving_reader(settings)
