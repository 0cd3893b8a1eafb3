"""How the slave reaches the master for the stream: the stream role ([database] stream_user),
its password from the slave's password file ([database] passfile, put there by wazo-sync -i on
the master), TLS."""

from __future__ import annotations

import os
import pwd
import stat

from ..adapters.db import logical, session
from ..decisions import pgpass
from ..errors import WazoHaError
from ..settings import Settings
from ..adapters.system import lstat_or_none, read_no_follow, read_text, write_no_follow


def _base(settings: Settings, master_ip: str) -> str:
    d = settings.database
    return (f'host={master_ip} port={d.remote_port} dbname={d.name} user={d.stream_user} '
            f'sslmode={d.sslmode} channel_binding=require connect_timeout={d.connect_timeout} '
            'keepalives=1 '
            'keepalives_idle=10 keepalives_interval=5 keepalives_count=3 tcp_user_timeout=30000')


def what(settings: Settings, master_ip: str) -> str:
    d = settings.database
    return f'the master database {d.name} at {master_ip}:{d.remote_port} as {d.stream_user}'


def password(settings: Settings, master_ip: str) -> str:
    d = settings.database
    prefix = pgpass.pgpass_prefix(master_ip, d.remote_port, d.name, d.stream_user)
    found = pgpass.pgpass_password(read_text(d.passfile) or '', prefix)
    if not found:
        raise WazoHaError(f'no password for the stream role {d.stream_user} of the master '
                          f'{master_ip} in {d.passfile}: run wazo-sync -i on the master (with '
                          '[database] mode = continuous there)')
    return found


def hint(message: str, settings: Settings) -> str:
    if any(s in message for s in ('password authentication failed', 'no password supplied',
                                  'is not permitted to log in')):
        return (f'{message}: the master refuses the stream role {settings.database.stream_user} '
                'or its password: run wazo-sync -i on the master')
    if 'pg_hba.conf' in message:
        return (f'{message}: is this slave allowed there? run wazo-ha-config set --node-type '
                'master on the master with [database] mode = continuous')
    return message


def connect_master(settings: Settings, master_ip: str, application: str):
    dsn = f'{_base(settings, master_ip)} passfile={settings.database.passfile}'
    try:
        return session.connect(dsn, what(settings, master_ip), application=application)
    except session.DatabaseError as e:
        raise session.DatabaseError(hint(str(e), settings)) from None


def connect_replication(settings: Settings, master_ip: str, application: str):
    dsn = f'{_base(settings, master_ip)} passfile={settings.database.passfile} replication=database'
    try:
        return logical.replication_connect(dsn, what(settings, master_ip) + ' (replication)',
                                           application)
    except session.DatabaseError as e:
        raise session.DatabaseError(hint(str(e), settings)) from None


def write_subscription_passfile(settings: Settings, master_ip: str) -> None:
    """The password file of the subscription ([database] subscription_passfile): the slave's
    PostgreSQL cannot read root's, and a password in the subscription itself would be in its
    catalog, in pg_dump's output and, on an error, in the server log. Rewritten at each run,
    so that a new password (wazo-sync -i again) reaches the running subscription."""
    d = settings.database
    line = pgpass.pgpass_prefix(master_ip, d.remote_port, d.name, d.stream_user) + \
        pgpass.pgpass_field(password(settings, master_ip)) + '\n'
    path = d.subscription_passfile
    owner = _owner(d.admin_system_user)
    st = lstat_or_none(path)
    # a link or another file planted there by the directory's owner is replaced, never followed
    if st is not None and stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and \
            (owner is None or (st.st_uid, st.st_gid) == owner) and _content(path) == line:
        return
    write_no_follow(path, line, mode=0o600, owner=owner)


def _content(path: str) -> str | None:
    try:
        return read_no_follow(path)
    except WazoHaError:  # swapped for a link since: replaced below
        return None


def _owner(user: str) -> tuple[int, int] | None:
    """(uid, gid) of the system user the slave's PostgreSQL runs as; None when not root."""
    if not user or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise WazoHaError(f'no system user {user} ([database] admin_system_user)') from None
    return entry.pw_uid, entry.pw_gid


def subscription_conninfo(settings: Settings, master_ip: str) -> str:
    """What the slave's PostgreSQL connects with: no password, its own password file."""
    return (f'{_base(settings, master_ip)} application_name=wazo_ha_subscription '
            f'passfile={settings.database.subscription_passfile}')
