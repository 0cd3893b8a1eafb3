"""On a slave, PostgreSQL accepts the master for replication; nothing else is opened.

Two managed places under [paths] postgresql_conf_dir:
- a block at the top of pg_hba.conf (first match wins, so it precedes any reject line);
- conf.d/wazo-ha.conf holding listen_addresses (Debian's postgresql.conf includes conf.d).
"""

from __future__ import annotations

import ipaddress
import logging
import os

from .settings import Settings
from .system import read_text, run, write_atomic

logger = logging.getLogger('wazo-ha')

BEGIN = '# BEGIN wazo-ha: the master may replicate into this slave (managed by wazo-ha-config)'
END = '# END wazo-ha'
CONF_NAME = 'wazo-ha.conf'


def hba_lines(master_ip: str | None, database: str, user: str) -> list[str]:
    if not master_ip:
        return []
    ip = ipaddress.ip_address(master_ip)
    prefix = 32 if ip.version == 4 else 128
    return [f'host {database} {user} {ip}/{prefix} trust']


def render_hba(text: str, master_ip: str | None, database: str, user: str) -> str:
    """pg_hba.conf with our block replaced (or removed when master_ip is None)."""
    if master_ip is None and BEGIN not in text.splitlines():
        return text
    kept, inside = [], False
    for line in text.splitlines():
        if line == BEGIN:
            inside = True
            continue
        if inside:
            if line == END:
                inside = False
            continue
        kept.append(line)
    rules = hba_lines(master_ip, database, user)
    block = [BEGIN, *rules, END] if rules else []
    result = block + kept
    return '\n'.join(result) + '\n' if result else ''


def render_conf(master_ip: str | None, listen_addresses: str) -> str | None:
    """Content of conf.d/wazo-ha.conf, or None when the file should not exist."""
    if not master_ip:
        return None
    return ('# Managed by wazo-ha-config: the master connects to this slave for replication.\n'
            f"listen_addresses = '{listen_addresses}'\n")


def apply(settings: Settings, master_ip: str | None) -> list[str]:
    """Open (master_ip given) or close (None) PostgreSQL to the master; returns what changed."""
    conf_dir = settings.paths.postgresql_conf_dir
    db = settings.database
    changes = []
    hba_path = os.path.join(conf_dir, 'pg_hba.conf')
    current = read_text(hba_path)
    if current is None:
        if master_ip is None:
            return []
        raise FileNotFoundError(f'{hba_path} does not exist (setting [paths] postgresql_conf_dir)')
    wanted = render_hba(current, master_ip, db.name, db.remote_user)
    hba_changed = wanted != current
    if hba_changed:
        write_atomic(hba_path, wanted, mode=os.stat(hba_path).st_mode & 0o777)
        _copy_owner(hba_path, conf_dir)
        changes.append(f'{hba_path}: ' + (f'{master_ip} may connect to database {db.name} as {db.remote_user}'
                                          if master_ip else 'replication access removed'))
    conf_path = os.path.join(conf_dir, 'conf.d', CONF_NAME)
    wanted_conf = render_conf(master_ip, db.listen_addresses)
    current_conf = read_text(conf_path)
    conf_changed = wanted_conf != current_conf
    if conf_changed:
        if wanted_conf is None:
            os.unlink(conf_path)
            changes.append(f'{conf_path}: removed')
        else:
            write_atomic(conf_path, wanted_conf, mode=0o644)
            _copy_owner(conf_path, conf_dir)
            changes.append(f'{conf_path}: listen_addresses = {db.listen_addresses!r}')
    if conf_changed:
        run(db.restart_command, timeout=120)
        changes.append('PostgreSQL restarted (listen_addresses changed)')
    elif hba_changed:
        run(db.reload_command, timeout=60)
        changes.append('PostgreSQL reloaded')
    return changes


def _copy_owner(path: str, reference: str) -> None:
    st = os.stat(reference)
    os.chown(path, st.st_uid, st.st_gid)
