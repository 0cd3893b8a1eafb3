"""What the commands pass down to the failover check (a function passed down rather than an
import that runs up): the check itself imports neither the stream nor wazo-sync. In hourly
mode the stream's code is not even loaded."""

from __future__ import annotations

import dataclasses

from .failover.check import Hooks
from .files import rsyncd
from .settings import Settings


def for_check(settings: Settings) -> Hooks:
    hooks = Hooks(keep_daemon_config=_keep_daemon_config)
    return dataclasses.replace(hooks, before_serving=_stop_stream) if settings.continuous \
        else hooks


def _stop_stream(settings: Settings) -> None:
    from .stream import job  # continuous mode only
    job.before_serving(settings)


def _keep_daemon_config(settings: Settings) -> list[str]:
    return rsyncd.apply_daemon_config(settings, slave=True)
