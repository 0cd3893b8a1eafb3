"""Errors every command maps to an exit code: 1 failed, 2 bad usage or input."""


class WazoHaError(Exception):
    """An expected failure: printed as one line, logged, exit 1."""

    exit_code = 1


class UsageError(WazoHaError):
    """Bad argument, bad input file or bad setting: nothing was changed, exit 2."""

    exit_code = 2


class InputError(UsageError, ValueError):
    """A value that is not acceptable (not an IP, this node's own address...)."""


class SettingsError(UsageError):
    """config.ini or a conf.d file is missing, unreadable, or holds a bad value."""


class HaConfError(UsageError):
    """/etc/xivo/ha.conf is missing, unreadable or corrupt."""


class WrongRoleError(WazoHaError):
    """The command does not apply to this node's HA role: nothing done, not a failure."""

    exit_code = 0


class LockBusyError(WazoHaError):
    """Another run of the same command holds the lock."""


class CommandError(WazoHaError):
    """An external program failed or timed out."""
