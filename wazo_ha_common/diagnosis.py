"""wazo-ha-config check: is this node set up as its settings and ha.conf say? One line per
thing checked (settings, ha.conf, sentinels, PostgreSQL access, rsync modules, the peer),
nothing changed."""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import role
from .access import fail2ban, pg_access
from .adapters import probes
from .adapters.system import read_text
from .errors import HaConfError, WazoHaError
from .files import rsyncd
from .settings import Settings

OK, FAILED, BAD = 'ok', 'FAILED', 'BAD INPUT'
EXIT_CODES = {OK: 0, FAILED: 1, BAD: 2}


@dataclass(frozen=True)
class Line:
    level: str          # OK, FAILED or BAD
    what: str           # settings, ha.conf, sentinels, pg_hba.conf, ...
    text: str

    def __str__(self) -> str:
        return f'{self.level}: {self.what}: {self.text}'


def exit_code(lines: list[Line]) -> int:
    """2 when a settings file or ha.conf is wrong, else 1 when something is not as it should
    be, else 0."""
    return max((EXIT_CODES[line.level] for line in lines), default=0)


def check(settings: Settings, config_file: str | None) -> list[Line]:
    lines = settings_lines(config_file, settings)
    try:
        config = role.load(settings.paths.ha_conf)
    except HaConfError as e:
        return lines + [Line(BAD, 'ha.conf', str(e))]
    peer = config.remote_address
    lines.append(Line(OK, 'ha.conf', f'{config.node_type}'
                      + (f', remote address {peer}' if peer else '')))
    lines.append(sentinel_line(settings, config.node_type))
    lines += access_lines(settings, config)
    if peer:
        answers = probes.ping(peer, settings.check.probe_timeout)
        lines.append(Line(OK if answers else FAILED, 'peer',
                          f'{peer} answers ping' if answers else
                          f'{peer} does not answer ping (is it up? ICMP allowed both ways?)'))
    return lines


def settings_lines(config_file: str | None, settings: Settings) -> list[Line]:
    """One line per mistake (file, section, key), or the files read."""
    problems = settings.problems
    if not problems:
        return [Line(OK, 'settings', ', '.join(settings.files))]
    return [Line(BAD, 'settings', p.text) for p in problems]


def sentinel_line(settings: Settings, node_type: str) -> Line:
    wanted = role.wanted_sentinel(node_type)
    found = role.current_sentinels(settings.paths.sentinel_dir)
    where = settings.paths.sentinel_dir
    if found == ({wanted} if wanted else set()):
        return Line(OK, 'sentinels', f'{", ".join(sorted(found)) or "none"} in {where}, as a '
                                     f'{node_type} node has')
    return Line(FAILED, 'sentinels', f'{", ".join(sorted(found)) or "none"} in {where}, a '
                                     f'{node_type} node has {wanted or "none"}: run '
                                     'wazo-ha-config set again with the role of ha.conf')


def access_lines(settings: Settings, config: role.HaConfig) -> list[Line]:
    """The slave's door for the master (pg_hba block, role, rsync modules), closed elsewhere;
    on the master, its login to the slave's database (the pairing)."""
    slave = config.node_type == 'slave'
    master_ip = config.remote_address if slave else None
    db = settings.database
    lines = []
    hba_path = os.path.join(settings.paths.postgresql_conf_dir, 'pg_hba.conf')
    current = read_text(hba_path)
    if current is None:
        lines.append(Line(FAILED if slave else OK, 'pg_hba.conf', f'{hba_path} does not exist'
                          + (' ([paths] postgresql_conf_dir)' if slave else '')))
    elif pg_access.render_hba(current, master_ip, db.name, db.remote_user,
                              db.subscription_owner) == current:
        lines.append(Line(OK, 'pg_hba.conf', f'{hba_path}: ' + (
            f'the block for the master {master_ip} is first' if slave else 'no block of wazo-ha')))
    else:
        lines.append(Line(FAILED, 'pg_hba.conf', f'{hba_path}: ' + (
            f'the block for the master {master_ip} is missing, changed or not first' if slave
            else 'a block of wazo-ha remains') + ': run wazo-ha-config set again'))
    if db.admin_psql and (slave or current is not None):
        lines.append(_role_line(settings, slave))
    conf_path = settings.sync.rsyncd_conf
    text = read_text(conf_path)
    if not slave:
        lines.append(Line(OK if text is None else FAILED, 'rsync modules',
                          f'{conf_path}: ' + ('none (the master\'s key opens nothing here)'
                                           if text is None else 'present on a node that is not '
                                           'a slave: run wazo-ha-config set again')))
    elif not settings.sound('sync'):
        lines.append(Line(FAILED, 'rsync modules', f'{conf_path}: not compared: [sync] has a mistake'))
    elif text == rsyncd.daemon_config_text(settings):
        lines.append(Line(OK, 'rsync modules', f'{conf_path}: as [sync] says'))
    else:
        lines.append(Line(FAILED, 'rsync modules', f'{conf_path}: ' + (
            'missing' if text is None else 'not as [sync] says')
            + ' (the next master check writes it; or run wazo-ha-config set again)'))
    if config.node_type == 'master':
        lines.append(_pairing_line(settings, config.remote_address))
        lines.append(_fail2ban_line(settings, config.remote_address))
    return lines


def _fail2ban_line(settings: Settings, slave_ip: str) -> Line:
    """The slave in the ignoreip fail2ban itself reads, in each jail that bans on Asterisk's
    log (the drop-in keeps what the administrator set: a jail set later may lose it)."""
    try:
        ok, sentence = fail2ban.effective(settings, slave_ip)
    except WazoHaError as e:
        ok, sentence = False, str(e)
    return Line(OK if ok else FAILED, 'fail2ban', sentence)


def _role_line(settings: Settings, slave: bool) -> Line:
    name = settings.database.remote_user
    try:
        state = pg_access.admin_json(settings, pg_access.ROLE_STATE_SQL, role=name)
        steps = pg_access.role_steps(state, name, settings.database.name, slave)
    except WazoHaError as e:
        return Line(FAILED, 'replication role', str(e))
    if steps:
        return Line(FAILED, 'replication role', '; '.join(s.sentence for s in steps)
                    + ' is still to do: run wazo-ha-config set again')
    return Line(OK, 'replication role', f'{name}: ' + (
        'as a slave needs it' if slave else 'none on this node'))


def _pairing_line(settings: Settings, slave_ip: str) -> Line:
    if not os.path.exists(settings.sync.ssh_key):
        return Line(FAILED, 'pairing', f'{settings.sync.ssh_key} does not exist: run wazo-sync -i')
    try:
        said = pg_access.check_pairing(settings, slave_ip)
    except WazoHaError as e:
        return Line(FAILED, 'pairing', pg_access.connection_hint(str(e), settings))
    return Line(OK, 'pairing', said.removeprefix('checked: '))


def run(settings: Settings, config_file: str | None) -> tuple[list[Line], int]:
    lines = check(settings, config_file)
    return lines, exit_code(lines)

