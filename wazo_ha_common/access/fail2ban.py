"""On the master, fail2ban never bans the slave: the slave's SIP OPTIONS probes are
unauthenticated, Asterisk answers them 401 and logs "No matching endpoint found", a line
fail2ban's Asterisk filters ban on; a banned slave's probes fail and it takes a healthy
master over. A jail.d drop-in puts the slave's address in ignoreip; fail2ban reloads it when
it runs. This module alone owns the drop-in ([paths] fail2ban_jail)."""

from __future__ import annotations

import ast
import configparser
import glob
import os

from ..errors import WazoHaError
from ..settings import Settings
from ..adapters.system import (find_program, read_text, run, tail, unlink_no_follow,
                               write_atomic)

HEADER = ('# Managed by wazo-ha (wazo-ha-config): the slave probes this master (ping, SIP '
          'OPTIONS)\n# and must never be banned. Removed when this node stops being a '
          'master.\n')
BASE = '127.0.0.1/8 ::1'   # fail2ban's own example, used where nothing sets ignoreip


def render(slave_ip: str, jails: tuple[str, ...], known: frozenset[str]) -> str:
    """The drop-in: in each jail, what the administrator's files set (%(known/ignoreip)s, where
    `known` says they set it: fail2ban refuses to start on a known/ value nothing set) plus
    the slave."""
    return HEADER + ''.join(
        f'[{jail}]\nignoreip = '
        + ('%(known/ignoreip)s' if jail in known else BASE) + f' {slave_ip}\n'
        for jail in jails)


def config_files(path: str) -> list[str]:
    """fail2ban's jail files in the order it reads them (jail.conf, jail.d/*.conf, jail.local,
    jail.d/*.local), but the drop-in and its former name."""
    jail_d = os.path.dirname(path)
    top = os.path.dirname(jail_d)
    ours = {path, _former(path)}
    return [f for f in [os.path.join(top, 'jail.conf'),
                        *sorted(glob.glob(os.path.join(jail_d, '*.conf'))),
                        os.path.join(top, 'jail.local'),
                        *sorted(glob.glob(os.path.join(jail_d, '*.local')))]
            if f not in ours and os.path.isfile(f)]


def known_ignoreip(path: str, jails: tuple[str, ...]) -> frozenset[str]:
    """The jails whose ignoreip the administrator's files set (in [DEFAULT] or the jail)."""
    known = set()
    for name in config_files(path):
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            with open(name, encoding='utf-8') as f:
                parser.read_file(f, source=name)
        except (OSError, UnicodeDecodeError, configparser.Error):
            continue   # fail2ban refuses it as well: wazo-ha-config check says so
        if 'ignoreip' in parser.defaults():
            return frozenset(jails)
        known.update(j for j in jails if parser.has_section(j)
                     and parser.has_option(j, 'ignoreip'))
    return frozenset(known)


def _former(path: str) -> str:
    """The drop-in's name before it became a .local (read before jail.local, whose ignoreip
    replaced it): removed when it is ours."""
    return os.path.splitext(path)[0] + '.conf'


def apply(settings: Settings, slave_ip: str | None) -> list[str]:
    """The drop-in for this slave (slave_ip) or none (None: not a master); reload fail2ban if
    it runs and the file changed. Returns what changed."""
    path = settings.paths.fail2ban_jail
    current = read_text(path)
    changes = []
    former = _former(path)
    if former != path and (read_text(former) or '').startswith(HEADER):
        unlink_no_follow(former)
        changes.append(f'{former}: removed (replaced by {path})')
    if slave_ip is None:
        if current is not None:
            os.unlink(path)
            changes.append(f'{path}: removed (fail2ban no longer ignores the former slave)')
    elif os.path.isdir(os.path.dirname(path)):  # else fail2ban is not installed
        jails = settings.paths.fail2ban_jails
        wanted = render(slave_ip, jails, known_ignoreip(path, jails))
        if current != wanted:
            write_atomic(path, wanted, mode=0o644)
            changes.append(f'{path}: fail2ban never bans the slave {slave_ip} (its probes)')
    return changes + _reload(settings) if changes else []


def effective(settings: Settings, slave_ip: str) -> tuple[bool, str]:
    """wazo-ha-config check: the jails of fail2ban_jails that fail2ban enables, read by
    fail2ban itself (its client's -d dump, no server needed), all ignore the slave? And one
    sentence."""
    client = settings.paths.fail2ban_client
    if not client or not find_program(client[0]) \
            or not os.path.isdir(os.path.dirname(settings.paths.fail2ban_jail)):
        return True, 'not installed (nothing can ban the slave)'
    dump = run([*client, '-d'], check=False, timeout=60)
    if dump.returncode != 0:
        return False, (f'fail2ban cannot read its configuration: '
                       f'{tail(dump.stderr + dump.stdout, 2) or "no output"}')
    enabled, ignored = set(), {}
    for line in dump.stdout.splitlines():
        try:
            item = ast.literal_eval(line.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
        if isinstance(item, list) and len(item) >= 2 and item[0] == 'add':
            enabled.add(item[1])
        elif isinstance(item, list) and len(item) >= 3 and item[0] == 'set' \
                and item[2] == 'addignoreip':
            ignored[item[1]] = [str(a) for a in item[3:]]
    watched = sorted(j for j in settings.paths.fail2ban_jails if j in enabled)
    missing = [j for j in watched if slave_ip not in ignored.get(j, [])]
    runs = _runs(client)
    when = 'fail2ban runs' if runs else 'fail2ban is not running: it reads them when it starts'
    if missing:
        return False, (f'the jails {", ".join(missing)} do not ignore the slave {slave_ip} in '
                       f'the files ({when}): run wazo-ha-config converge, and add the slave to '
                       'the ignoreip of any jail that sets its own after jail.d')
    if not watched:
        return True, (f'none of the jails {" ".join(settings.paths.fail2ban_jails)} is enabled '
                      f'({when})')
    if runs:
        loaded = [j for j in watched if slave_ip not in _running_ignoreip(client, j)]
        if loaded:
            return False, (f'fail2ban runs with the jails {", ".join(loaded)} not ignoring the '
                           f'slave {slave_ip}, though its files do: run fail2ban-client reload')
    return True, f'the jails {", ".join(watched)} ignore the slave {slave_ip} ({when})'


def _running_ignoreip(client: tuple[str, ...], jail: str) -> set[str]:
    """The addresses a running fail2ban ignores in a jail (its client's tree, one a line)."""
    got = run([*client, 'get', jail, 'ignoreip'], check=False, timeout=30)
    if got.returncode != 0:
        return set()
    return {line.strip().lstrip('|`-').strip() for line in got.stdout.splitlines()}


def _runs(client: tuple[str, ...]) -> bool:
    return run([*client, 'ping'], check=False, timeout=30).returncode == 0


def _reload(settings: Settings) -> list[str]:
    client = settings.paths.fail2ban_client
    if not client or not find_program(client[0]):
        return []
    if not _runs(client):
        return []  # not running: it reads the drop-in when it starts
    try:
        run([*client, 'reload'], timeout=60)
    except WazoHaError as e:
        raise WazoHaError(f'fail2ban did not reload its jails: {e}') from None
    return ['fail2ban reloaded']
