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


# the slave's own look at the master (continuous mode: it logs into the master)

@dataclass(frozen=True)
class Look:
    """What the slave's wazo-ha-stream last found of the master's cluster (failover/origin
    keeps it, the failover check and wazo-ha-status read it)."""
    master: str             # the master's address
    system: str             # its system identifier (IDENTIFY_SYSTEM)
    recorded: str | None    # the slave's record of the cluster it copied from (None: none)
    at: float               # wall clock

    @property
    def foreign(self) -> bool:
        """Another cluster than the one the slave copied from (nothing recorded: not)."""
        return self.recorded not in (MISSING, NO_TABLE) and self.recorded != self.system


def look_from_dict(data) -> Look | None:
    """A Look from its JSON form; None for {}; ValueError naming a wrong field."""
    if data == {}:
        return None
    if not isinstance(data, dict):
        raise ValueError(f'not a JSON object but {type(data).__name__}')
    for name in ('master', 'system'):
        if not isinstance(data.get(name), str) or not data[name]:
            raise ValueError(f'{name}: not text: {data.get(name)!r}')
    if data.get('recorded') is not None and not isinstance(data['recorded'], str):
        raise ValueError(f'recorded: not text: {data["recorded"]!r}')
    at = data.get('at')
    if isinstance(at, bool) or not isinstance(at, (int, float)) or at < 0 or at != at \
            or at == float('inf'):
        raise ValueError(f'at: not a time: {at!r}')
    return Look(data['master'], data['system'], data.get('recorded'), float(at))


def kept_serving(master_ip: str) -> str:
    """The failback held: what the check logs, mails and wazo-ha-status shows."""
    return (f'{refusal(master_ip)}; this slave keeps serving telephony meanwhile (to give it '
            'back to that master, its data replacing the slave\'s: '
            'xivo-master-slave-db-replication --replace-slave --force on the master, then '
            'the slave fails back and copies it afresh)')


def failback_held(look: Look | None, master_ip: str) -> str | None:
    """Pure: why the slave must not give telephony back to `master_ip` (its last look found
    another cluster there than the one it copied from), None when nothing holds it back."""
    if look is None or look.master != master_ip or not look.foreign:
        return None
    return kept_serving(master_ip)
