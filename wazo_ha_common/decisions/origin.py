"""A rebuilt master never wipes the slave: what to do with the slave's data, given its record
of the master cluster it copied from (see replication/origin)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import WazoHaError

MISSING = None          # nothing recorded: the first copy to this slave
NO_TABLE = 'no-table'   # a slave set up before this record existed


class ForeignMasterError(WazoHaError):
    """The master is not the cluster the slave copied from: exit 1, nothing changed."""


class UnknownOriginError(ForeignMasterError):
    """The slave's record cannot be read (its database does not answer): nothing pushed, as
    for a foreign master (a rebuilt master would delete the slave's files)."""


def unknown_origin(why: str) -> str:
    return (f'cannot tell which cluster the slave copied from: nothing pushed ({why}); run '
            'again once its database answers, or with --replace-slave')


def refusal(master_ip: str) -> str:
    return (f'the master at {master_ip} is not the cluster this slave copied from (rebuilt?): '
            'promote the slave or run with --replace-slave')


@dataclass(frozen=True)
class Decision:
    proceed: bool
    record: bool        # write the master's identifier in the slave's record
    sentence: str


def decide(recorded: str | None, master: str, master_ip: str, replace: bool) -> Decision:
    """Pure: what to do with the slave's data, given its record and the master's identity."""
    if recorded == NO_TABLE:
        return Decision(True, False, 'the slave keeps no record of the master it copies from '
                                     '(set up by an older wazo-ha, or its [database] admin_psql '
                                     'is empty): run wazo-ha-config set --node-type slave ... '
                                     'on the slave, with admin_psql set')
    if recorded is MISSING:
        return Decision(True, True, f'first copy to this slave: it now remembers the master '
                                    f'cluster {master}')
    if recorded == master:
        return Decision(True, False, '')
    if replace:
        return Decision(True, True, f'--replace-slave: the slave copied from the cluster '
                                    f'{recorded}, it now takes the master cluster {master}')
    return Decision(False, False, refusal(master_ip))
