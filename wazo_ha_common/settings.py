"""Settings: /etc/wazo-ha/config.ini plus conf.d/*.ini, parsed once into typed objects."""

from __future__ import annotations

import configparser
import glob
import os
import shlex
from dataclasses import dataclass, field
from typing import Callable

from .errors import SettingsError

DEFAULT_CONFIG_FILE = '/etc/wazo-ha/config.ini'
ENV_VAR = 'WAZO_HA_CONFIG'

DEFAULT_EXCLUDED_TABLES = ' '.join([
    # the documented list
    'call_log', 'call_log_participant', 'cel', 'dhcp', 'queue_log', 'session',
    'stat_agent', 'stat_agent_periodic', 'stat_call_on_queue', 'stat_queue',
    'stat_queue_periodic', 'mail', 'monitoring', 'netiface', 'resolvconf',
    # the same categories on today's schema: call logs, statistics, node-local state
    'call_logd_*', 'stat_*', 'auth_token', 'auth_session', 'auth_saml_session',
    'auth_refresh_token', 'auth_saml_pysaml2_cache', 'provisioning',
])

# as Wazo's own xivo-sync: the service keys go with the replicated wazo-auth tables (their
# passwords cannot be recovered from the database), and of the tenants' sounds only the
# files made by configuration (acd, playback), never the recordings a slave makes
DEFAULT_SYNC_DIRECTORIES = '\n'.join([
    '/etc/asterisk/extensions_extra.d',
    '/etc/xivo/asterisk',
    '/root/.config/wazo-auth-cli',
    '/var/lib/asterisk/agi-bin',
    '/var/lib/asterisk/moh',
    '/var/lib/wazo-auth-keys',
    '/var/lib/wazo/sounds/tenants/*/acd',
    '/var/lib/wazo/sounds/tenants/*/playback',
])

DEFAULT_FAILBACK_DIRECTORIES = '\n'.join([
    '/var/spool/asterisk/voicemail',
    '/var/spool/asterisk/monitor',
    '/var/lib/wazo/sounds/tenants',
])

# section -> key -> default (as text, the way it would be written in the INI file)
DEFAULTS: dict[str, dict[str, str]] = {
    'paths': {
        'ha_conf': '/etc/xivo/ha.conf',
        'sentinel_dir': '/var/lib/wazo',
        'state_dir': '/var/lib/wazo-ha',
        'lock_dir': '/run/lock',
        'log_file': '/var/log/wazo-ha.log',
        'postgresql_conf_dir': '/etc/postgresql/15/main',
    },
    'database': {
        'name': 'asterisk',
        'local_dsn': 'host=localhost dbname=asterisk user=asterisk password=proformatique',
        'remote_user': 'postgres',
        'remote_port': '5432',
        'connect_timeout': '10',
        'excluded_tables': DEFAULT_EXCLUDED_TABLES,
        'reload_command': 'pg_ctlcluster 15 main reload',
        'restart_command': 'pg_ctlcluster 15 main restart',
        'listen_addresses': '*',
        'verify_every': '86400',
    },
    'check': {
        'probe_interval': '5',
        'down_after': '15',
        'up_after': '60',
        'run_for': '55',
        'witness': '',
        'probe_timeout': '2',
        'tcp_ports': '',
        'http_url': '',
    },
    'sync': {
        'ssh_key': '/root/.ssh/xivo_id_rsa',
        'remote_user': 'root',
        'directories': DEFAULT_SYNC_DIRECTORIES,
        'failback_directories': DEFAULT_FAILBACK_DIRECTORIES,
        'connect_timeout': '10',
        'timeout': '3600',
        'ssh_port': '22',
    },
    'mail': {
        'recipient': 'root@localhost',
        'sendmail': '/usr/sbin/sendmail',
    },
    'wazo_api': {
        'enabled': 'true',
        'auth_url': 'https://localhost:9497/api/auth/0.1',
        'confd_url': 'https://localhost:9486/1.1',
        'key_file': '/var/lib/wazo-auth-keys/wazo-ha-key.yml',
        'verify': 'false',
        'timeout': '10',
    },
}


@dataclass(frozen=True)
class Paths:
    ha_conf: str
    sentinel_dir: str
    state_dir: str
    lock_dir: str
    log_file: str
    postgresql_conf_dir: str


@dataclass(frozen=True)
class Database:
    name: str
    local_dsn: str
    remote_user: str
    remote_port: int
    connect_timeout: int
    excluded_tables: tuple[str, ...]
    reload_command: tuple[str, ...]
    restart_command: tuple[str, ...]
    listen_addresses: str
    verify_every: int           # seconds between two verifications by content; 0: never


@dataclass(frozen=True)
class Check:
    probe_interval: float
    down_after: float
    up_after: float
    run_for: float
    witness: str
    probe_timeout: float
    tcp_ports: tuple[int, ...]
    http_url: str


@dataclass(frozen=True)
class Sync:
    ssh_key: str
    remote_user: str
    directories: tuple[str, ...]
    failback_directories: tuple[str, ...]
    connect_timeout: int
    timeout: int
    ssh_port: int


@dataclass(frozen=True)
class Mail:
    recipient: str
    sendmail: str


@dataclass(frozen=True)
class WazoApi:
    enabled: bool
    auth_url: str
    confd_url: str
    key_file: str
    verify: bool | str
    timeout: float


@dataclass(frozen=True)
class Settings:
    paths: Paths
    database: Database
    check: Check
    sync: Sync
    mail: Mail
    wazo_api: WazoApi
    files: tuple[str, ...] = field(default=())


def config_file_from_env() -> str:
    return os.environ.get(ENV_VAR) or DEFAULT_CONFIG_FILE


def load(path: str | None = None) -> Settings:
    """Read the main file (default: $WAZO_HA_CONFIG or /etc/wazo-ha/config.ini) and its conf.d."""
    main = path or config_file_from_env()
    if not os.path.isfile(main):
        raise SettingsError(f'{main}: settings file not found')
    extra = sorted(glob.glob(os.path.join(os.path.dirname(main), 'conf.d', '*.ini')))
    files = [main] + extra
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict(DEFAULTS)
    origin: dict[tuple[str, str], str] = {}
    for name in files:
        single = configparser.ConfigParser(interpolation=None)
        try:
            with open(name, encoding='utf-8') as f:
                single.read_file(f, source=name)
        except (OSError, UnicodeDecodeError, configparser.Error) as e:
            raise SettingsError(f'{name}: cannot be read: {_one_line(e)}') from None
        for section in single.sections():
            if section not in DEFAULTS:
                raise SettingsError(f'{name}: unknown section [{section}]')
            for key, value in single.items(section, raw=True):
                if key not in DEFAULTS[section]:
                    raise SettingsError(f'{name}: [{section}] {key}: unknown key')
                parser.set(section, key, value)
                origin[(section, key)] = name
    return _typed(parser, origin, tuple(files))


def _one_line(e: Exception) -> str:
    return ' '.join(str(e).split())


def _typed(p: configparser.ConfigParser, origin: dict, files: tuple[str, ...]) -> Settings:
    def get(section: str, key: str, convert: Callable = str):
        raw = p.get(section, key, raw=True).strip()
        try:
            return convert(raw)
        except ValueError as e:
            where = origin.get((section, key), 'built-in default')
            raise SettingsError(f'{where}: [{section}] {key}: bad value {raw!r}: {e}') from None

    paths = Paths(**{k: get('paths', k, _abs_path) for k in DEFAULTS['paths']})
    database = Database(
        name=get('database', 'name', _identifier),
        local_dsn=get('database', 'local_dsn'),
        remote_user=get('database', 'remote_user', _identifier),
        remote_port=get('database', 'remote_port', _port),
        connect_timeout=get('database', 'connect_timeout', _positive_int),
        excluded_tables=tuple(get('database', 'excluded_tables').split()),
        reload_command=get('database', 'reload_command', _command),
        restart_command=get('database', 'restart_command', _command),
        listen_addresses=get('database', 'listen_addresses', _nonempty),
        verify_every=get('database', 'verify_every', _non_negative_int),
    )
    check = Check(
        probe_interval=get('check', 'probe_interval', _positive_float),
        down_after=get('check', 'down_after', _positive_float),
        up_after=get('check', 'up_after', _positive_float),
        run_for=get('check', 'run_for', _non_negative_float),
        witness=get('check', 'witness', _optional_ip),
        probe_timeout=get('check', 'probe_timeout', _positive_float),
        tcp_ports=get('check', 'tcp_ports', _ports),
        http_url=get('check', 'http_url', _optional_url),
    )
    sync = Sync(
        ssh_key=get('sync', 'ssh_key', _abs_path),
        remote_user=get('sync', 'remote_user', _identifier),
        directories=get('sync', 'directories', _abs_paths),
        failback_directories=get('sync', 'failback_directories', _abs_paths),
        connect_timeout=get('sync', 'connect_timeout', _positive_int),
        timeout=get('sync', 'timeout', _positive_int),
        ssh_port=get('sync', 'ssh_port', _port),
    )
    mail = Mail(recipient=get('mail', 'recipient', _nonempty),
                sendmail=get('mail', 'sendmail', _abs_path))
    api = WazoApi(
        enabled=get('wazo_api', 'enabled', _bool),
        auth_url=get('wazo_api', 'auth_url', _url),
        confd_url=get('wazo_api', 'confd_url', _url),
        key_file=get('wazo_api', 'key_file', _abs_path),
        verify=get('wazo_api', 'verify', _verify),
        timeout=get('wazo_api', 'timeout', _positive_float),
    )
    return Settings(paths, database, check, sync, mail, api, files)


# converters: each raises ValueError with a short reason

def _nonempty(raw: str) -> str:
    if not raw:
        raise ValueError('must not be empty')
    return raw


def _abs_path(raw: str) -> str:
    if not raw.startswith('/'):
        raise ValueError('must be an absolute path')
    return os.path.normpath(raw)


def _abs_paths(raw: str) -> tuple[str, ...]:
    return tuple(_abs_path(line) for line in raw.split() if line)


def _identifier(raw: str) -> str:
    if not raw or not all(c.isalnum() or c in '_-' for c in raw):
        raise ValueError('must be a simple name (letters, digits, _ and -)')
    return raw


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError('must be a positive integer')
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError('must be zero or a positive integer')
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 < value < 65536:
        raise ValueError('must be a port number (1-65535)')
    return value


def _ports(raw: str) -> tuple[int, ...]:
    return tuple(_port(p) for p in raw.replace(',', ' ').split())


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError('must be a positive number of seconds')
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if value < 0:
        raise ValueError('must be zero or a positive number of seconds')
    return value


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ('1', 'yes', 'true', 'on'):
        return True
    if lowered in ('0', 'no', 'false', 'off'):
        return False
    raise ValueError('must be true or false')


def _verify(raw: str) -> bool | str:
    if raw.startswith('/'):
        return raw
    return _bool(raw)


def _url(raw: str) -> str:
    if not raw.startswith(('http://', 'https://')):
        raise ValueError('must be an http:// or https:// URL')
    return raw.rstrip('/')


def _optional_url(raw: str) -> str:
    return _url(raw) if raw else ''


def _optional_ip(raw: str) -> str:
    if not raw:
        return ''
    from .ha_state import parse_ip
    return str(parse_ip(raw))


def _command(raw: str) -> tuple[str, ...]:
    argv = tuple(shlex.split(raw))
    if not argv:
        raise ValueError('must name a command')
    return argv
