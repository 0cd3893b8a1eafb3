"""Settings: /etc/wazo-ha/config.ini plus conf.d/*.ini, parsed once into typed objects.

Every setting is one row of TABLE (section, key, default, kind with its bounds, comment); the
typed sections and etc/config.ini are made from it (`python3 -m wazo_ha_common.settings`
prints the file), so adding a setting is adding a row."""

from __future__ import annotations

import configparser
import glob
import ipaddress
import math
import os
import shlex
import sys
from dataclasses import dataclass, field, make_dataclass

from .decisions.addresses import parse_ip
from .errors import SettingsError

DEFAULT_CONFIG_FILE = '/etc/wazo-ha/config.ini'
ENV_VAR = 'WAZO_HA_CONFIG'
# [database] mode: the hourly copy, or the stream (logical replication) beside it
HOURLY, CONTINUOUS = 'hourly', 'continuous'


# kinds of values: each parses the text of the INI file and refuses what is out of bounds
# with a ValueError saying why

class Kind:
    type: type = str

    def parse(self, raw: str):
        raise NotImplementedError


@dataclass(frozen=True)
class Text(Kind):
    empty: bool = False
    forbidden: str = ''       # characters refused (e.g. a quote that would end a value)
    type = str

    def parse(self, raw):
        if not raw and not self.empty:
            raise ValueError('must not be empty')
        bad = sorted({c for c in raw if c in self.forbidden or ord(c) < 32})
        if bad:
            raise ValueError(f'must not contain {" ".join(repr(c) for c in bad)}')
        return raw


@dataclass(frozen=True)
class Name(Kind):
    type = str

    def parse(self, raw):
        if not raw or not all(c.isalnum() or c in '_-' for c in raw) or not raw.isascii():
            raise ValueError('must be a simple name (letters, digits, _ and -)')
        return raw


@dataclass(frozen=True)
class Names(Kind):
    """Simple names separated by spaces (at least one)."""
    type = tuple

    def parse(self, raw):
        names = tuple(raw.split())
        if not names:
            raise ValueError('must not be empty')
        for name in names:
            Name().parse(name)
        return names


@dataclass(frozen=True)
class Path(Kind):
    type = str

    def parse(self, raw):
        return _path(raw)


@dataclass(frozen=True)
class Directories(Kind):
    """Absolute paths, one per line (shell patterns allowed); never / itself."""
    type = tuple

    def parse(self, raw):
        paths = tuple(_path(line) for line in raw.split() if line)
        if '/' in paths:
            raise ValueError('/ is not a directory to copy: name the directories')
        return paths


@dataclass(frozen=True)
class Words(Kind):
    type = tuple

    def parse(self, raw):
        return tuple(raw.split())


@dataclass(frozen=True)
class Number(Kind):
    """A finite number within [low, high]; seconds unless said otherwise."""
    low: float
    high: float
    integer: bool = False

    @property
    def type(self):
        return int if self.integer else float

    def parse(self, raw):
        try:
            value = int(raw) if self.integer else float(raw)
        except ValueError:
            raise ValueError('must be a ' + ('whole number' if self.integer else 'number')) from None
        if not math.isfinite(value) or not self.low <= value <= self.high:
            raise ValueError(f'must be between {self.low:g} and {self.high:g}')
        return value


@dataclass(frozen=True)
class Ports(Kind):
    type = tuple

    def parse(self, raw):
        return tuple(PORT.parse(p) for p in raw.replace(',', ' ').split())


@dataclass(frozen=True)
class SipTargets(Kind):
    """TRANSPORT:PORT pairs (udp or tcp), e.g. `udp:5060 tcp:5060`."""
    type = tuple

    def parse(self, raw):
        targets = []
        for item in raw.replace(',', ' ').split():
            transport, _, port = item.partition(':')
            if transport.lower() not in ('udp', 'tcp') or not port:
                raise ValueError(f'{item!r}: must be udp:PORT or tcp:PORT')
            target = (transport.lower(), PORT.parse(port))
            if target not in targets:
                targets.append(target)
        return tuple(targets)


@dataclass(frozen=True)
class Bool(Kind):
    type = bool

    def parse(self, raw):
        lowered = raw.lower()
        if lowered in ('1', 'yes', 'true', 'on'):
            return True
        if lowered in ('0', 'no', 'false', 'off'):
            return False
        raise ValueError('must be true or false')


@dataclass(frozen=True)
class Verify(Kind):
    """TLS verification: true, false, or the path of a CA bundle."""
    type = object

    def parse(self, raw):
        return _path(raw) if raw.startswith('/') else Bool().parse(raw)


@dataclass(frozen=True)
class Url(Kind):
    empty: bool = False
    type = str

    def parse(self, raw):
        if not raw and self.empty:
            return ''
        from urllib.parse import urlsplit
        try:
            parts = urlsplit(raw)
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError as e:
            raise ValueError(f'not a URL: {e}') from None
        if parts.scheme not in ('http', 'https') or not parts.hostname:
            raise ValueError('must be an http:// or https:// URL with a host')
        return raw.rstrip('/')


@dataclass(frozen=True)
class Address(Kind):
    """An IP address of another machine, or empty."""
    type = str

    def parse(self, raw):
        if not raw:
            return ''
        return str(parse_ip(raw))


@dataclass(frozen=True)
class Command(Kind):
    empty: bool = False       # an empty value gives the empty tuple (the step is not done)
    type = tuple

    def parse(self, raw):
        argv = tuple(shlex.split(raw))
        if not argv and not self.empty:
            raise ValueError('must name a command')
        return argv


@dataclass(frozen=True)
class Choice(Kind):
    choices: tuple[str, ...] = ()
    type = str

    def parse(self, raw):
        if raw not in self.choices:
            raise ValueError('must be one of ' + ', '.join(self.choices))
        return raw


@dataclass(frozen=True)
class ListenAddresses(Kind):
    """PostgreSQL's listen_addresses: *, or IP addresses and host names separated by commas;
    empty when `empty` (the value is then worked out by the program)."""
    empty: bool = False
    type = str

    def parse(self, raw):
        if not raw and self.empty:
            return ''
        items = [item.strip() for item in raw.split(',')]
        if not raw or not all(items):
            raise ValueError('must be * or addresses separated by commas')
        for item in items:
            if item == '*':
                continue
            try:
                ipaddress.ip_address(item)
            except ValueError:
                if not all(c.isalnum() or c in '.-' for c in item):
                    raise ValueError(f'{item!r} is not an address') from None
        return ', '.join(items)


def _path(raw: str) -> str:
    if not raw.startswith('/'):
        raise ValueError('must be an absolute path')
    if any(ord(c) < 32 for c in raw):
        raise ValueError('must not contain control characters')
    return os.path.normpath(raw)


PORT = Number(1, 65535, integer=True)


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    default: str          # as written in the INI file (lines of a list one per line)
    kind: Kind
    comment: str          # the lines above the key in etc/config.ini


HEADER = """\
wazo-ha settings. Every key is listed here with its default.
Local changes are best made in /etc/wazo-ha/conf.d/*.ini (read in name order,
later files win), so that this file stays as the package ships it.
The environment variable WAZO_HA_CONFIG names another main file.
This file is made from wazo_ha_common/settings.py (python3 -m wazo_ha_common.settings)."""

EXCLUDED_TABLES = '\n'.join([
    # the documented list
    'call_log call_log_participant cel dhcp queue_log session',
    'stat_agent stat_agent_periodic stat_call_on_queue stat_queue stat_queue_periodic',
    'mail monitoring netiface resolvconf',
    # the same categories on today's schema: call logs, statistics, node-local state
    'call_logd_* stat_* auth_token auth_session auth_saml_session',
    'auth_refresh_token auth_saml_pysaml2_cache provisioning',
])

TABLE = (
    Setting('paths', 'ha_conf', '/etc/xivo/ha.conf', Path(),
            'HA role of this node, written by wazo-ha-config (and by wazo-sysconfd on Wazo)'),
    Setting('paths', 'sentinel_dir', '/var/lib/wazo', Path(),
            'where the is-primary / is-secondary sentinels live'),
    Setting('paths', 'state_dir', '/var/lib/wazo-ha', Path(),
            'state kept between runs (failover decision, last replication, last sync)'),
    Setting('paths', 'lock_dir', '/run/lock/wazo-ha', Path(),
            'one lock file per command, in a directory only root may enter (made 0700 if missing)'),
    Setting('paths', 'log_file', '/var/log/wazo-ha.log', Path(), ''),
    Setting('paths', 'monitoring_dir', '/var/lib/wazo-ha-monitoring', Path(),
            'where root writes the summary of wazo-ha-status (status.json, no secrets) for\n'
            'monitoring agents that do not run as root: made by the package root:wazo-ha-monitor,\n'
            'mode 2750; add the agent\'s user to the group wazo-ha-monitor'),
    Setting('paths', 'prometheus_textfile', '/var/lib/prometheus/node-exporter/wazo_ha.prom',
            Path(),
            "the same figures for Prometheus's node exporter (textfile collector), written when\n"
            'this directory exists (Debian\'s prometheus-node-exporter reads this one)'),
    Setting('paths', 'fail2ban_jail', '/etc/fail2ban/jail.d/wazo-ha.local', Path(),
            "on the master: fail2ban drop-in that adds the slave to the ignoreip of each jail of\n"
            'fail2ban_jails (its SIP OPTIONS probes must never get it banned), keeping what the\n'
            'administrator set (a .local: read after jail.local); written when the directory\n'
            'exists'),
    Setting('paths', 'fail2ban_jails', 'asterisk asterisk-wazo', Names(),
            "the fail2ban jails that ban on Asterisk's log (Debian's and Wazo's), where the slave\n"
            'is ignored'),
    Setting('paths', 'fail2ban_client', 'fail2ban-client', Command(empty=True),
            'how the drop-in is reloaded when fail2ban runs (ping, then reload), and read back\n'
            'by wazo-ha-config check (-d); empty: never'),
    Setting('paths', 'postgresql_conf_dir', '/etc/postgresql/15/main', Path(),
            "directory holding pg_hba.conf and conf.d/ of this node's PostgreSQL cluster"),

    Setting('database', 'name', 'asterisk', Name(),
            'database replicated from the master to the slave'),
    Setting('database', 'local_dsn',
            'host=localhost dbname=asterisk user=asterisk password=proformatique', Text(),
            "libpq connection string of this node's own database"),
    Setting('database', 'remote_user', 'wazo_ha_replication', Name(),
            "the master connects to the slave's PostgreSQL as this role on this port: a role\n"
            'that is not a superuser, created on the slave by wazo-ha-config, its password set\n'
            'by wazo-sync -i on the master'),
    Setting('database', 'remote_port', '5432', PORT, ''),
    Setting('database', 'sslmode', 'require', Choice(('require', 'verify-ca', 'verify-full')),
            "libpq sslmode of the connection to the slave (the slave's pg_hba.conf takes\n"
            'the replication role over TLS only); verify-* need the CA in /root/.postgresql'),
    Setting('database', 'passfile', '/root/.pgpass', Path(),
            "on the master: libpq password file holding the replication role's password\n"
            '(written by wazo-sync -i, mode 0600)'),
    Setting('database', 'admin_psql', 'runuser -u postgres -- psql', Command(empty=True),
            "how wazo-ha-config runs psql as PostgreSQL's superuser on this node (to create,\n"
            'grant and drop the replication and stream roles, and to find what converge must\n'
            'take away); empty: the roles are left to the administrator'),
    Setting('database', 'connect_timeout', '10', Number(1, 600, integer=True),
            'seconds to wait for a PostgreSQL connection'),
    Setting('database', 'excluded_tables', EXCLUDED_TABLES, Words(),
            'tables never replicated (nor their sequences); shell-style patterns allowed'),
    Setting('database', 'verify_every', '86400', Number(0, 30 * 86400, integer=True),
            'seconds between two verifications: a replication run then compares every copied table\n'
            'by content whatever the tracking record says, repairs any difference and mails root when\n'
            'the tracking had missed one (also by hand: xivo-master-slave-db-replication --verify);\n'
            '0 = never'),
    Setting('database', 'mode', CONTINUOUS, Choice((HOURLY, CONTINUOUS)),
            'continuous: PostgreSQL logical replication streams every change of the copied\n'
            'tables to the slave within seconds (the slave runs wazo-ha-stream every minute and\n'
            "reaches the master's TCP 5432; whenever it does not stream, the master's hourly run\n"
            'copies as in hourly mode); hourly: only the hourly copy (the documented behaviour),\n'
            "the opt-out: no flow from the slave to the master's 5432, no wal_level = logical, the\n"
            "slave's root cannot read the master's cluster (see README \"Continuous\n"
            'replication"). The same on both nodes'),
    Setting('database', 'stream_user', 'wazo_ha_stream', Name(),
            'continuous mode: the role the slave logs in as on the master (REPLICATION and\n'
            'SELECT on the copied tables only), created on the master by wazo-ha-config, its\n'
            'password made by wazo-sync -i and kept in the slave\'s [database] passfile'),
    Setting('database', 'slot_wal_keep_size', '1024', Number(16, 1048576, integer=True),
            "continuous mode, on the master: megabytes of WAL the slave's replication slot may\n"
            'hold back (max_slot_wal_keep_size); past it the slot is lost, the master\'s disk is\n'
            'safe and the slave makes a fresh copy'),
    Setting('database', 'first_hand_off_wait', '900', Number(0, 86400, integer=True),
            "continuous mode, on the master: seconds after the master's replication run first\n"
            'finds the pair paired (wazo-sync -i) during which a slave that has no slot yet is\n'
            "waiting for its first hand-off (its next cron minute): the run copies, status says\n"
            'so, root is not mailed; past them, the slave with no slot is mailed as a cause'),
    Setting('database', 'subscription_drop_timeout', '20', Number(1, 600, integer=True),
            'seconds a converge waits for the old master to drop its slot when it drops the\n'
            'subscription of a node that is no longer its continuous slave; past them the\n'
            'subscription is dropped without it (the master drops our slots itself)'),
    Setting('database', 'subscription_passfile', '/var/lib/postgresql/wazo-ha-stream.pgpass',
            Path(),
            "continuous mode, on the slave: the password file the slave's PostgreSQL reads for\n"
            'its subscription (owned by admin_system_user, 0600), written by wazo-ha-stream from\n'
            '[database] passfile; the subscription itself holds no password'),
    Setting('database', 'admin_dsn', 'host=/run/postgresql port=5432 dbname=asterisk user=postgres',
            Text(),
            "continuous mode, on the slave: libpq connection string of this node's database as\n"
            'its superuser (creating a subscription needs one on PostgreSQL 15)'),
    Setting('database', 'subscription_owner', 'wazo_ha_subscriber', Name(),
            'continuous mode, on the slave: the role that owns the subscription (PostgreSQL 15\n'
            'applies the stream with its rights) and makes the hand-off\'s copy: no superuser,\n'
            'a member of the tables\' owner, created by wazo-ha-stream; it has a password only\n'
            'during a hand-off, made for that one, and logs in through the local socket only'),
    Setting('database', 'admin_system_user', 'postgres', Text(empty=True, forbidden=' :/'),
            'the system user whose identity that connection is made with (peer authentication);\n'
            'empty: as root'),
    Setting('database', 'reload_command', 'pg_ctlcluster 15 main reload', Command(),
            'how wazo-ha-config makes PostgreSQL read pg_hba.conf again, or restart it\n'
            '(a restart is needed when listen_addresses changes)'),
    Setting('database', 'restart_command', 'pg_ctlcluster 15 main restart', Command(), ''),
    Setting('database', 'listen_addresses', '', ListenAddresses(empty=True),
            'listen_addresses written to conf.d/wazo-ha.conf on a slave; empty: the address\n'
            'this slave uses to reach the master, and localhost'),

    Setting('check', 'probe_interval', '5', Number(0.5, 60),
            'seconds between two probes of the master'),
    Setting('check', 'down_after', '15', Number(1, 3600),
            'master declared down after this many seconds without an answer'),
    Setting('check', 'up_after', '60', Number(1, 3600),
            'master declared up again after answering for this many seconds'),
    Setting('check', 'run_for', '55', Number(0, 3600),
            'how long one run (started by cron every minute) keeps probing'),
    Setting('check', 'witness', '', Address(),
            'optional IP of a third machine: if neither master nor witness answers,\n'
            'this slave is the one cut off and does not take over'),
    Setting('check', 'probe_timeout', '2', Number(0.1, 60),
            "seconds to wait for one probe's answer"),
    Setting('check', 'tcp_ports', '', Ports(),
            'optional TCP ports of the master that must accept connections (e.g. 5060 443)'),
    Setting('check', 'http_url', '', Url(empty=True),
            'optional URL on the master that must answer with a 2xx/3xx status'),
    Setting('check', 'sip_options', '', SipTargets(),
            "optional SIP transports of the master's Asterisk, e.g. udp:5060 tcp:5060: each\n"
            'probe also sends a SIP OPTIONS request to each; any SIP response counts as alive,\n'
            'none within probe_timeout as a failed probe (Asterisk dead, machine up = down)'),
    Setting('check', 'failback_drain', '0', Number(0, 3600),
            "on failback, wait up to this many seconds for the slave's calls to end before\n"
            "stopping its telephony (asterisk -rx 'core show channels count'); 0: stop at once"),
    Setting('check', 'failback_phones', 'true', Bool(),
            "on failback, before stopping its telephony, the slave waits for the phones\n"
            "registered on it to go back to the master: until Asterisk holds no registered\n"
            "contact (asterisk -rx 'database show registrar/contact': phones, not the trunks'\n"
            'fixed contacts), at most failback_phones_timeout + failback_phones_margin seconds\n'
            '(counted from the decision "master up", across runs; looked at every probe). Both\n'
            'nodes serve meanwhile. false: stop at once (the documented behaviour)'),
    Setting('check', 'failback_phones_timeout', '120', Number(0, 3600),
            "the phones' fallback timeout: how often a phone registered on its backup server\n"
            "checks its primary (Yealink's fallback.timeout, 120 s by default)"),
    Setting('check', 'failback_phones_margin', '30', Number(0, 3600),
            'seconds added to failback_phones_timeout to bound that wait'),

    Setting('sync', 'ssh_key', '/root/.ssh/xivo_id_rsa', Path(),
            'SSH key made by wazo-sync -i and used by wazo-sync'),
    Setting('sync', 'remote_user', 'root', Name(), ''),
    Setting('sync', 'directories', '\n'.join([
        '/etc/asterisk/extensions_extra.d',
        '/etc/xivo/asterisk',
        '/root/.config/wazo-auth-cli',
        '/var/lib/asterisk/agi-bin',
        '/var/lib/asterisk/moh',
        '/var/lib/wazo-auth-keys',
        '/var/lib/wazo/sounds/tenants/*/acd',
        '/var/lib/wazo/sounds/tenants/*/playback',
    ]), Directories(),
            'directories copied to the slave, one per line; shell-style patterns are expanded at\n'
            "each run. As Wazo's xivo-sync: the wazo-auth service keys travel with the replicated\n"
            "auth tables (a failed-over slave's daemons log in with them), and of the tenants'\n"
            'sounds only acd and playback: recordings made on the slave are never deleted'),
    Setting('sync', 'failback_directories', '\n'.join([
        '/var/spool/asterisk/voicemail',
        '/var/spool/asterisk/monitor',
        '/var/lib/wazo/sounds/tenants',
    ]), Directories(),
            'copied back from the slave by wazo-sync --failback (voicemail, recordings, sounds):\n'
            'a file missing here or newer on the slave is copied, the older one kept beside it\n'
            '(NAME.before-failback-DATE); nothing is deleted'),
    Setting('sync', 'voicemail_dir', '/var/spool/asterisk/voicemail', Path(),
            "Asterisk's voicemail spool, when it is one of the failback directories: its\n"
            'messages are merged, each into the same folder at the next free number, once;\n'
            'its greetings follow the rule above'),
    Setting('sync', 'voicemail_conf', '/etc/asterisk/voicemail.conf', Path(),
            "Asterisk's voicemail configuration on the master: its maxmsg (in [general] and\n"
            'per mailbox, 100 by default) caps each folder the bring-back fills; messages that\n'
            'do not fit stay on the slave (logged, mailed once). Missing: no cap but 9999'),
    Setting('sync', 'voicemail_stage_max_mb', '2048', Number(0, 1048576, integer=True),
            "MB: the slave's voicemail spool is staged under [paths] state_dir before its\n"
            'messages are merged; a larger spool is not staged: it stays on the slave (logged,\n'
            'mailed once; raise this and run wazo-sync --failback). 0: no cap'),
    Setting('sync', 'record_dir', '/var/lib/wazo-ha/failback-record', Path(),
            'on a slave: where it records the telephony it served (served.json); the master\'s\n'
            'key may read this directory only, and its next wazo-sync brings voicemail and\n'
            'recordings back first, once per failover'),
    Setting('sync', 'rsyncd_conf', '/etc/wazo-ha/rsyncd.conf', Path(),
            "on a slave: the rsync daemon configuration the master's key is bound to (written\n"
            'by the converge of wazo-ha-config, every minute, from the three settings above;\n'
            'the same path on both nodes)'),
    Setting('sync', 'connect_timeout', '10', Number(1, 600, integer=True),
            'seconds to wait for the SSH connection, and for a whole rsync run'),
    Setting('sync', 'timeout', '3600', Number(1, 86400, integer=True), ''),
    Setting('sync', 'shared_connection_idle', '120', Number(1, 3600, integer=True),
            "seconds an SSH connection shared by one run's reads of the slave's failback\n"
            'record outlives its last read, should the run be killed before it ends it'),
    Setting('sync', 'ssh_port', '22', PORT, ''),
    Setting('sync', 'pair_command', '/usr/sbin/wazo-ha-config pair-receive', Command(),
            "what wazo-sync -i runs on the slave, as root in the SSH session it opens, to pair\n"
            "the database: the slave's converge, then the role's password (the protocol on\n"
            'its standard input: man wazo-ha-config)'),

    Setting('mail', 'recipient', 'root@localhost', Text(forbidden=' ,;<>"\'\\'),
            'failures of the cron jobs are mailed here'),
    Setting('mail', 'sendmail', '/usr/sbin/sendmail', Path(), ''),

    Setting('sip', 'min_expiry', '180', Number(1, 86400, integer=True),
            'SIP registration expiry bounds wazo-ha-config sets while HA is on (seconds; the\n'
            "PJSIP AOR options minimum_expiration, maximum_expiration, default_expiration of each\n"
            "tenant's global SIP template). A phone finds a dead master only at its next\n"
            'registration: lower values bring calls back sooner after a failover, for more\n'
            'registrations per second (phones / granted expiry); see docs/benchmarks.md'),
    Setting('sip', 'max_expiry', '300', Number(1, 86400, integer=True), ''),
    Setting('sip', 'default_expiry', '240', Number(1, 86400, integer=True), ''),

    Setting('wazo_api', 'enabled', 'true', Bool(),
            'false on a node without the Wazo APIs: SIP expiry and backup registrar are then\n'
            'left to the administrator'),
    Setting('wazo_api', 'auth_url', 'https://localhost:9497/api/auth/0.1', Url(), ''),
    Setting('wazo_api', 'confd_url', 'https://localhost:9486/1.1', Url(), ''),
    Setting('wazo_api', 'key_file', '/var/lib/wazo-auth-keys/wazo-ha-key.yml', Path(),
            'wazo-auth service credentials (service_id, service_key), made by wazo-auth-keys'),
    Setting('wazo_api', 'verify', 'false', Verify(),
            'true, false, or the path of a CA bundle'),
    Setting('wazo_api', 'timeout', '10', Number(0.1, 300), ''),
)

SECTIONS = tuple(dict.fromkeys(s.section for s in TABLE))
DEFAULTS: dict[str, dict[str, str]] = {
    section: {s.key: s.default for s in TABLE if s.section == section} for section in SECTIONS}


def _section_class(section: str) -> type:
    name = ''.join(part.capitalize() for part in section.split('_'))
    return make_dataclass(name, [(s.key, s.kind.type) for s in TABLE if s.section == section],
                          frozen=True)


Paths, Database, Check, Sync, Mail, Sip, WazoApi = (_section_class(s) for s in SECTIONS)
_CLASSES = dict(zip(SECTIONS, (Paths, Database, Check, Sync, Mail, Sip, WazoApi)))


@dataclass(frozen=True)
class Problem:
    """A mistake in a settings file: the file, the section and key it is about (None: the
    whole file), and the one-line error naming them."""
    file: str
    section: str | None
    key: str | None
    text: str


@dataclass(frozen=True)
class Settings:
    paths: Paths
    database: Database
    check: Check
    sync: Sync
    mail: Mail
    sip: Sip
    wazo_api: WazoApi
    files: tuple[str, ...] = field(default=())
    problems: tuple[Problem, ...] = field(default=())   # tolerated by load(strict=...)

    def sound(self, section: str) -> bool:
        """No tolerated problem touches this section (its values are the files' own)."""
        return not any(p.section in (section, None) for p in self.problems)

    @property
    def continuous(self) -> bool:
        """[database] mode = continuous: the slave's database follows the master's stream."""
        return self.database.mode == CONTINUOUS


def config_file_from_env() -> str:
    return os.environ.get(ENV_VAR) or DEFAULT_CONFIG_FILE


def load(path: str | None = None, strict: tuple[str, ...] | None = None) -> Settings:
    """Read the main file (default: $WAZO_HA_CONFIG or /etc/wazo-ha/config.ini) and its conf.d.

    SettingsError on the first problem; with `strict`, only on a problem in those sections
    (or a file that cannot be read, unless `strict` is empty: wazo-ha-config check lists
    everything): a bad value elsewhere gives that key its default, an unknown key or section
    is left out, and each is kept in Settings.problems."""
    settings, problems = read(path)
    for problem in problems:
        if strict is None or problem.section in strict or (problem.section is None and strict):
            raise SettingsError(problem.text)
    return settings


def read(path: str | None = None) -> tuple[Settings, tuple[Problem, ...]]:
    """Every problem of the files, and the settings with defaults where a value is bad."""
    main = path or config_file_from_env()
    if not os.path.isfile(main):
        raise SettingsError(f'{main}: settings file not found')
    extra = sorted(glob.glob(os.path.join(os.path.dirname(main), 'conf.d', '*.ini')))
    files = [main] + extra
    problems: list[Problem] = []
    values = {(s.section, s.key): (s.default, 'built-in default') for s in TABLE}
    for name in files:
        try:
            with open(name, encoding='utf-8') as f:
                single, broken = _parse(name, f.read())
        except (OSError, UnicodeDecodeError, configparser.Error, RecursionError) as e:
            problems.append(Problem(name, None, None, f'{name}: cannot be read: {_short(e)}'))
            continue
        problems += broken
        for section in single.sections():
            if section in {p.section for p in broken}:
                continue   # a section with a syntax error: none of its keys in this file
            if section not in DEFAULTS:
                problems.append(Problem(name, _short(section), None,
                                        f'{name}: unknown section [{_short(section)}]'))
                continue
            for key, value in single.items(section, raw=True):
                if key not in DEFAULTS[section]:
                    problems.append(Problem(name, section, _short(key),
                                            f'{name}: [{section}] {_short(key)}: unknown key'))
                    continue
                values[(section, key)] = (value, name)
    typed: dict[str, dict] = {section: {} for section in SECTIONS}
    for s in TABLE:
        raw, where = values[(s.section, s.key)]
        raw = raw.strip()
        try:
            typed[s.section][s.key] = s.kind.parse(raw)
        except ValueError as e:
            problems.append(Problem(where, s.section, s.key,
                                    f'{where}: [{s.section}] {s.key}: bad value {_short(raw)!r}: '
                                    f'{e}'))
            typed[s.section][s.key] = s.kind.parse(s.default.strip())
    sip, order = typed['sip'], ('min_expiry', 'default_expiry', 'max_expiry')
    if not sip['min_expiry'] <= sip['default_expiry'] <= sip['max_expiry']:
        where = next((values[('sip', k)][1] for k in order
                      if values[('sip', k)][1] != 'built-in default'), main)
        problems.append(Problem(where, 'sip', None,
                                f'{where}: [sip] min_expiry {sip["min_expiry"]}, default_expiry '
                                f'{sip["default_expiry"]}, max_expiry {sip["max_expiry"]}: must '
                                'be in that order (min <= default <= max)'))
        for s in TABLE:
            if s.section == 'sip' and s.key in order:
                sip[s.key] = s.kind.parse(s.default.strip())
    settings = Settings(**{section: _CLASSES[section](**typed[section]) for section in SECTIONS},
                        files=tuple(files), problems=tuple(problems))
    return settings, tuple(problems)


def _parse(name: str, text: str) -> tuple[configparser.ConfigParser, list[Problem]]:
    """One settings file, and its syntax errors each tied to the section of its line (a line
    without '=', a key or a section given twice), so that a command reading other sections
    still runs; a line before any section leaves the file unread (configparser.Error)."""
    single = configparser.ConfigParser(interpolation=None)
    problems: list[Problem] = []
    try:
        single.read_string(text, source=name)
        return single, problems
    except configparser.MissingSectionHeaderError:
        raise
    except (configparser.DuplicateOptionError, configparser.DuplicateSectionError) as e:
        what = f'[{_short(e.section)}] {_short(e.option)}: set twice' \
            if isinstance(e, configparser.DuplicateOptionError) \
            else f'[{_short(e.section)}]: section given twice'
        problems.append(Problem(name, _short(e.section), None,
                                f'{name}: line {e.lineno}: {what} (keep one)'))
    except configparser.ParsingError as e:
        return single, _line_problems(name, text, e)
    single = configparser.ConfigParser(interpolation=None, strict=False)  # the other sections
    try:
        single.read_string(text, source=name)
    except configparser.ParsingError as e:
        problems += _line_problems(name, text, e)
    return single, problems


def _line_problems(name: str, text: str, error: configparser.ParsingError) -> list[Problem]:
    """configparser reads on past a line it cannot parse: each such line, with its section."""
    lines = text.splitlines()
    out = []
    for lineno, line in error.errors:
        section = None
        for previous in reversed(lines[:lineno - 1]):
            header = configparser.ConfigParser.SECTCRE.match(previous)
            if header:
                section = _short(header.group('header'))
                break
        out.append(Problem(name, section, None,
                           f'{name}: line {lineno}: [{section}] not a "key = value" line: '
                           f'{_short(lines[lineno - 1] if 0 < lineno <= len(lines) else line)}'))
    return out


def _short(value, limit: int = 80) -> str:
    """One line of at most `limit` characters: a long or many-line value stays readable."""
    text = ' '.join(str(value).split())
    return text if len(text) <= limit else text[:limit - 3] + '...'


def render_ini() -> str:
    """etc/config.ini as the package ships it: every key, its default and its comment."""
    out = [f'# {line}'.rstrip() for line in HEADER.splitlines()]
    for section in SECTIONS:
        out += ['', f'[{section}]']
        for s in (s for s in TABLE if s.section == section):
            out += [f'# {line}' for line in s.comment.splitlines()]
            first, *rest = s.default.splitlines() or ['']
            out.append(f'{s.key} = {first}'.rstrip())
            out += [f'    {line}' for line in rest]
    return '\n'.join(out) + '\n'


if __name__ == '__main__':
    sys.stdout.write(render_ini())
