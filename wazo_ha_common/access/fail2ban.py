"""On the master, fail2ban never bans the slave: the slave's SIP OPTIONS probes are
unauthenticated, Asterisk answers them 401 and logs "No matching endpoint found", a line
fail2ban's Asterisk filters ban on; a banned slave's probes fail and it takes a healthy
master over. A jail.d drop-in puts the slave's address in ignoreip; fail2ban reloads it when
it runs. This module alone owns the drop-in ([paths] fail2ban_jail)."""

from __future__ import annotations

import os

from ..errors import WazoHaError
from ..settings import Settings
from ..adapters.system import find_program, read_text, run, write_atomic

HEADER = ('# Managed by wazo-ha (wazo-ha-config): the slave probes this master (ping, SIP '
          'OPTIONS)\n# and must never be banned. Removed when this node stops being a '
          'master.\n')


def render(slave_ip: str) -> str:
    """The drop-in: fail2ban's default ignoreip (loopback) plus the slave, for every jail
    that does not set its own ignoreip (such a jail must add the slave itself)."""
    return HEADER + f'[DEFAULT]\nignoreip = 127.0.0.1/8 ::1 {slave_ip}\n'


def apply(settings: Settings, slave_ip: str | None) -> list[str]:
    """The drop-in for this slave (slave_ip) or none (None: not a master); reload fail2ban if
    it runs and the file changed. Returns what changed."""
    path = settings.paths.fail2ban_jail
    current = read_text(path)
    changes = []
    if slave_ip is None:
        if current is None:
            return []
        os.unlink(path)
        changes.append(f'{path}: removed (fail2ban no longer ignores the former slave)')
    else:
        wanted = render(slave_ip)
        if current == wanted:
            return []
        if not os.path.isdir(os.path.dirname(path)):
            return []  # fail2ban is not installed: nothing can ban the slave
        write_atomic(path, wanted, mode=0o644)
        changes.append(f'{path}: fail2ban never bans the slave {slave_ip} (its probes)')
    return changes + _reload(settings)


def _reload(settings: Settings) -> list[str]:
    client = settings.paths.fail2ban_client
    if not client or not find_program(client[0]):
        return []
    if run([*client, 'ping'], check=False, timeout=30).returncode != 0:
        return []  # not running: it reads the drop-in when it starts
    try:
        run([*client, 'reload'], timeout=60)
    except WazoHaError as e:
        raise WazoHaError(f'fail2ban did not reload its jails: {e}') from None
    return ['fail2ban reloaded']
