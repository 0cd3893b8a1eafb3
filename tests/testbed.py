"""Two (or more) Wazo-like nodes on one machine, for the integration and end-to-end tests.

Each node gets:
- a network namespace with its own 198.18.0.x address, all attached to a bridge that
  lives in a "hub" namespace (so a node's link can be cut from the hub);
- a persistent mount namespace where /etc/xivo, /var/lib/wazo, /etc/asterisk,
  /var/lib/asterisk, /root/.ssh, /root/.config and /var/lib/wazo-auth-keys are the node's
  own directories;
- its own PostgreSQL 15 cluster (initdb as postgres), listening only on a socket until
  wazo-ha-config opens it, and optionally its own sshd;
- a settings file (WAZO_HA_CONFIG) and recording stand-ins for the Wazo-only programs.

Everything is torn down by Testbed.close(), which kills every process of the namespaces.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import textwrap
import threading
import time
from typing import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, 'tests', 'fixtures')
SCHEMA = os.path.join(FIXTURES, 'wazo-asterisk-schema.sql')
POPULATE = os.path.join(FIXTURES, 'wazo-asterisk-populate.sql')
PG_BIN = '/usr/lib/postgresql/15/bin'
SUBNET = '198.18.0'
NODE_DIRS = {
    '/etc/xivo': 'etc-xivo',
    '/var/lib/wazo': 'var-lib-wazo',
    '/etc/asterisk': 'etc-asterisk',
    '/var/lib/asterisk': 'var-lib-asterisk',
    '/var/spool/asterisk': 'var-spool-asterisk',
    '/root/.ssh': 'root-ssh',
    '/root/.config': 'root-config',
    '/var/lib/wazo-auth-keys': 'var-lib-wazo-auth-keys',
    '/etc/wazo-ha': 'etc-wazo-ha',  # the node's settings and the slave's rsyncd.conf
}
STAND_INS = ('wazo-service', 'xivo-create-config', 'xivo-update-config', 'dhcpd-update',
             'wazo-confgen', 'wazo-agentd-cli', 'systemctl', 'asterisk')
BIN_DIR = os.path.join(REPO, 'bin')
# asterisk -rx 'core show channels count' as Asterisk's main/cli.c (handle_chanlist, concise
# off) prints it, with the number of calls a test writes in stand-ins/asterisk.calls: one
# number per line, each answer takes the first line and drops it unless it is the last
# (calls ending one by one); 0 when the file is missing. Other commands print nothing.
ASTERISK_BEHAVIOUR = '''\
if [ "$1 $2" = "-rx core show channels count" ]; then
  n=$(head -n 1 {calls} 2>/dev/null); n=${{n:-0}}
  [ "$(wc -l < {calls} 2>/dev/null || echo 0)" -gt 1 ] && sed -i 1d {calls}
  s=s; [ "$n" = 1 ] && s=
  echo "$((n * 2)) active channels"
  echo "$n active call$s"
  echo "$((n + 12)) calls processed"
fi
# asterisk -rx 'database show registrar/contact' (phones' registered contacts) and
# 'pjsip show contacts' (those and a trunk's fixed contact): the contacts of the node's SIP
# registrar (sip_registrar.py), or as many as stand-ins/asterisk.contacts says, in Asterisk's
# formats
if [ "$1 $2" = "-rx database show registrar/contact" ]; then
  exec /usr/bin/python3 {registrar_py} database-show {ctl} {pid} {contacts}
fi
if [ "$1 $2" = "-rx pjsip show contacts" ]; then
  exec /usr/bin/python3 {registrar_py} show-contacts {ctl} {pid} {contacts}
fi
'''
# what wazo-service does that matters to HA: enable/disable toggle /var/lib/wazo/disabled,
# start runs everything unless disabled (then only the base services), status all exits 0
# only when everything runs
WAZO_SERVICE_BEHAVIOUR = '''\
state={state}
case "$1 $2" in
  "enable "*) rm -f /var/lib/wazo/disabled ;;
  "disable "*) touch /var/lib/wazo/disabled ;;
  "start "*|"restart "*) if [ -e /var/lib/wazo/disabled ]; then echo base > $state; else echo all > $state; fi ;;
  "stop wazo") echo base > $state ;;
  "stop "*) echo none > $state ;;
  "status all") [ "$(cat $state 2>/dev/null)" = all ] || exit 1 ;;
esac
# the node's SIP registrar (sip_registrar.py, when the test set one up) runs with "all"
if [ -x {registrar} ]; then
  case "$1" in
    start|restart|stop) if [ "$(cat $state)" = all ]; then {registrar} start; else {registrar} stop; fi ;;
  esac
fi
'''



def sh(*argv, check=True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f'{" ".join(map(str, argv))}: exit {result.returncode}: '
                             f'{result.stderr.strip()[-2000:]}')
    return result


def wait_until(predicate, timeout=20.0, step=0.1):
    """predicate()'s first true value within timeout seconds, else the last (false) one."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


@contextlib.contextmanager
def flock_held(path: str, prefix: Sequence[str] = ()):
    """Another process (started through `prefix`, such as runuser) holds an flock on `path`,
    a file or a directory, from the start of the block (it says so once it holds it) to its
    end (then it is killed with its child, which holds the lock too)."""
    holder = subprocess.Popen([*prefix, 'flock', '-w', '10', str(path), 'sh', '-c',
                               'echo held; exec sleep 300'], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        assert holder.stdout.readline() == 'held\n', f'{path}: not held ({holder.wait()})'
        yield
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        holder.stdout.close()


def read_fixture(path: str) -> str:
    with open(path, encoding='utf-8') as f:
        return f.read()


def template_cluster(workdir: str) -> str:
    """A stopped PostgreSQL data dir with the real Wazo asterisk database (once a session)."""
    base = os.path.join(workdir, 'template')
    data, sock, log = f'{base}/data', f'{base}/sock', f'{base}/postgresql.log'
    os.makedirs(base)
    shutil.chown(base, 'postgres', 'postgres')
    sh('runuser', '-u', 'postgres', '--', 'mkdir', '-m', '700', data, sock)
    sh('runuser', '-u', 'postgres', '--', f'{PG_BIN}/initdb', '-D', data, '--auth=trust',
       '-E', 'UTF8', '--locale=C.UTF-8', '-U', 'postgres')
    # TLS as on Debian (its clusters use the ssl-cert snakeoil pair): a self-signed pair
    sh('runuser', '-u', 'postgres', '--', 'openssl', 'req', '-x509', '-newkey', 'rsa:2048',
       '-nodes', '-days', '3650', '-subj', '/CN=wazo-ha-testbed', '-keyout',
       f'{data}/server.key', '-out', f'{data}/server.crt')
    with open(os.path.join(data, 'postgresql.conf'), 'a') as f:
        f.write("\nfsync = off\nsynchronous_commit = off\n"
                "full_page_writes = off\nmax_connections = 50\nshared_buffers = 64MB\n"
                "ssl = on\n")
    os.makedirs(os.path.join(data, 'conf.d'))
    shutil.chown(os.path.join(data, 'conf.d'), 'postgres', 'postgres')
    sh('runuser', '-u', 'postgres', '--', f'{PG_BIN}/pg_ctl', '-D', data, '-l', log, '-w',
       '-o', f"-c listen_addresses='' -c unix_socket_directories={sock}", 'start')
    try:
        psql = ['runuser', '-u', 'postgres', '--', f'{PG_BIN}/psql', '-h', sock, '-X', '-q',
                '-v', 'ON_ERROR_STOP=1']
        # as on Wazo: the database and its tables belong to asterisk, not a superuser
        sh(*psql, '-d', 'postgres', '-c', "CREATE ROLE asterisk LOGIN PASSWORD 'proformatique'")
        sh(*psql, '-d', 'postgres', '-c', 'CREATE DATABASE asterisk OWNER asterisk')
        # on stdin: psql runs as postgres, which may not read the checkout (a clone under
        # /root is mode 0700)
        sh(*psql, '-d', 'asterisk', input='SET ROLE asterisk;\n' + read_fixture(SCHEMA))
        sh(*psql, '-d', 'asterisk', input=read_fixture(POPULATE),
           env={**os.environ, 'PGOPTIONS': '-c session_replication_role=replica'})
    finally:
        sh('runuser', '-u', 'postgres', '--', f'{PG_BIN}/pg_ctl', '-D', data, '-m', 'fast',
           '-w', 'stop')
    return data


class Node:
    def __init__(self, bed: Testbed, name: str, ip: str, with_postgres: bool):
        self.bed = bed
        self.name = name
        self.ip = ip
        self.ns = f'{bed.prefix}-{name}'
        self.root = os.path.join(bed.workdir, name)
        self.mnt = os.path.join(bed.nsdir, f'{name}.mnt')
        self.pgbase = os.path.join(self.root, 'pg')
        self.pgdata = os.path.join(self.pgbase, 'data')
        self.pgsock = os.path.join(self.pgbase, 'sock')
        self.pglog = os.path.join(self.pgbase, 'postgresql.log')
        self.config = os.path.join(self.root, 'etc-wazo-ha', 'config.ini')
        self.calls = os.path.join(self.root, 'calls.log')
        self.mail_dir = os.path.join(self.root, 'mail')
        self.with_postgres = with_postgres
        self.sshd_pid: int | None = None
        self.sip_server: subprocess.Popen | None = None

    # paths as the host sees the node's private directories
    def host_path(self, node_path: str) -> str:
        for mount, sub in NODE_DIRS.items():
            if node_path == mount or node_path.startswith(mount + '/'):
                return os.path.join(self.root, sub) + node_path[len(mount):]
        return node_path

    @property
    def ha_conf(self) -> str:
        return self.host_path('/etc/xivo/ha.conf')

    @property
    def sentinel_dir(self) -> str:
        return self.host_path('/var/lib/wazo')

    @property
    def log_file(self) -> str:
        return os.path.join(self.root, 'log', 'wazo-ha.log')

    @property
    def state_dir(self) -> str:
        return os.path.join(self.root, 'state')

    @property
    def env(self) -> dict:
        path = f'{self.root}/stand-ins:{BIN_DIR}:/usr/sbin:/usr/bin:/sbin:/bin'
        return {'PATH': path, 'WAZO_HA_CONFIG': self.config, 'PYTHONPATH': REPO,
                'LANG': 'C.UTF-8', 'HOME': '/root', 'PYTHONDONTWRITEBYTECODE': '1'}

    def nsenter(self, argv) -> list[str]:
        return ['nsenter', f'--net=/run/netns/{self.ns}', f'--mount={self.mnt}', '--', *argv]

    def run(self, *argv, input=None, timeout=300, env=None) -> subprocess.CompletedProcess:
        """Run a program inside the node, as root, with the node's settings."""
        return subprocess.run(self.nsenter([str(a) for a in argv]), capture_output=True,
                              text=True, input=input, timeout=timeout,
                              env={**self.env, **(env or {})},
                              stdin=None if input is not None else subprocess.DEVNULL)

    def popen(self, *argv, env=None, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.nsenter([str(a) for a in argv]),
                                env={**self.env, **(env or {})}, **kwargs)

    def wazo(self, command: str, *args, **kwargs) -> subprocess.CompletedProcess:
        """One of the package's commands, from bin/, with Debian's python3."""
        return self.run('/usr/bin/python3', os.path.join(BIN_DIR, command), *args, **kwargs)

    # set-up

    def build(self) -> None:
        os.makedirs(self.root)
        os.chmod(self.root, 0o755)
        for sub in NODE_DIRS.values():
            os.makedirs(os.path.join(self.root, sub))
        os.chmod(os.path.join(self.root, 'root-ssh'), 0o700)
        for sub in ('state', 'lock', 'log', 'stand-ins', 'mail'):
            os.makedirs(os.path.join(self.root, sub))
        self._write_stand_ins()
        sh('ip', 'netns', 'add', self.ns)
        veth_node, veth_hub = f'{self.bed.tag}{self.name[:3]}n', f'{self.bed.tag}{self.name[:3]}h'
        self.hub_if = veth_hub
        sh('ip', 'link', 'add', veth_node, 'netns', self.ns, 'type', 'veth',
           'peer', 'name', veth_hub, 'netns', self.bed.hub)
        sh('ip', '-n', self.bed.hub, 'link', 'set', veth_hub, 'master', 'br0', 'up')
        sh('ip', '-n', self.ns, 'link', 'set', 'lo', 'up')
        sh('ip', '-n', self.ns, 'link', 'set', veth_node, 'name', 'eth0')
        sh('ip', '-n', self.ns, 'addr', 'add', f'{self.ip}/24', 'dev', 'eth0')
        sh('ip', '-n', self.ns, 'link', 'set', 'eth0', 'up')
        open(self.mnt, 'w').close()
        binds = []
        for mount, sub in NODE_DIRS.items():
            self.bed.ensure_mountpoint(mount)
            binds.append(f'mount --bind {os.path.join(self.root, sub)} {mount}')
        sh('unshare', f'--mount={self.mnt}', '--propagation', 'private',
           'sh', '-ec', '; '.join(binds))
        if self.with_postgres:
            self._init_postgres()
        else:  # a node without a cluster still has a pg_hba.conf for wazo-ha-config to edit
            os.makedirs(self.pgdata)
            with open(os.path.join(self.pgdata, 'pg_hba.conf'), 'w') as f:
                f.write('local all all peer\n')
        self.write_settings()

    def _write_stand_ins(self) -> None:
        for name in STAND_INS:
            path = os.path.join(self.root, 'stand-ins', name)
            with open(path, 'w') as f:
                f.write(textwrap.dedent(f'''\
                    #!/bin/sh
                    # recording stand-in for {name}: logs its arguments, exits as told
                    echo "$(date +%s.%N) {name} $*" >> {self.calls}
                    rc_file={self.root}/stand-ins/{name}.rc
                    [ -f "$rc_file" ] && exit "$(cat "$rc_file")"
                    '''))
                if name == 'wazo-service':
                    f.write(WAZO_SERVICE_BEHAVIOUR.format(state=self.services_state_file,
                                                          registrar=self.registrar_script))
                if name == 'asterisk':
                    f.write(ASTERISK_BEHAVIOUR.format(
                        calls=self.asterisk_calls_file,
                        registrar_py=os.path.join(REPO, 'tests', 'sip_registrar.py'),
                        ctl=self.registrar_ctl,
                        pid=os.path.join(self.root, 'registrar', 'kamailio.pid'),
                        contacts=self.asterisk_contacts_file))
                f.write('exit 0\n')
            os.chmod(path, 0o755)
        sendmail = os.path.join(self.root, 'stand-ins', 'sendmail')
        with open(sendmail, 'w') as f:
            f.write(f'#!/bin/sh\ncat > "$(mktemp -p {self.mail_dir} mail.XXXXXX)"\n')
        os.chmod(sendmail, 0o755)

    @property
    def asterisk_calls_file(self) -> str:
        """How many calls the asterisk stand-in says are up (a number; missing: 0)."""
        return os.path.join(self.root, 'stand-ins', 'asterisk.calls')

    @property
    def asterisk_contacts_file(self) -> str:
        """How many contacts the asterisk stand-in lists (numbers; missing: the registrar's)."""
        return os.path.join(self.root, 'stand-ins', 'asterisk.contacts')

    @property
    def services_state_file(self) -> str:
        return os.path.join(self.root, 'stand-ins', 'wazo-service.state')

    def services_state(self) -> str:
        """What the wazo-service stand-in runs: all, base (disabled mode) or none."""
        with contextlib.suppress(FileNotFoundError), open(self.services_state_file) as f:
            return f.read().strip()
        return 'none'

    def stand_in_calls(self, timestamps: bool = False) -> list[str]:
        """Calls made to the stand-ins, oldest first ('wazo-service start', ...)."""
        try:
            with open(self.calls) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        return lines if timestamps else [line.split(" ", 1)[1].rstrip() for line in lines]

    def mails(self) -> list[str]:
        out = []
        for name in sorted(os.listdir(self.mail_dir)):
            with open(os.path.join(self.mail_dir, name)) as f:
                out.append(f.read())
        return out

    def _pg_ctl(self, *args) -> list[str]:
        return ['runuser', '-u', 'postgres', '--', f'{PG_BIN}/pg_ctl', '-D', self.pgdata,
                '-l', self.pglog, *args]

    def _init_postgres(self) -> None:
        os.makedirs(self.pgsock)
        shutil.copytree(self.bed.template, self.pgdata, symlinks=True)
        sh('chown', '-R', 'postgres:postgres', self.pgbase)
        with open(os.path.join(self.pgdata, 'postgresql.conf'), 'a') as f:
            f.write(f"\nunix_socket_directories = '{self.pgsock}'\nlisten_addresses = ''\n"
                    "include_dir = 'conf.d'  # last, as in Debian's postgresql.conf\n")
        # inside the node the socket is where Debian's is: `runuser -u postgres -- psql` works
        self.bed.ensure_mountpoint('/run/postgresql')
        sh(*self.nsenter(['mount', '--bind', self.pgsock, '/run/postgresql']))
        self.start_postgres()

    def start_postgres(self) -> None:
        result = self.run(*self._pg_ctl('-w', '-t', '60', 'start'))
        assert result.returncode == 0, result.stderr + self._pglog_tail()

    def stop_postgres(self, mode: str = 'fast') -> None:
        self.run(*self._pg_ctl('-m', mode, '-w', 'stop'))

    def _pglog_tail(self) -> str:
        with contextlib.suppress(OSError), open(self.pglog) as f:
            return ''.join(f.readlines()[-10:])
        return ''

    @property
    def passfile(self) -> str:
        """root's ~/.pgpass of the node ([database] passfile)."""
        return os.path.join(self.root, 'root-pgpass')

    @property
    def local_dsn(self) -> str:
        return f'host={self.pgsock} port=5432 dbname=asterisk user=postgres'

    def psql(self, sql: str, db: str = 'asterisk') -> str:
        """Run SQL on the node's cluster through its socket; returns unaligned output."""
        # PG_BIN's psql: Debian's /usr/bin/psql is a Perl wrapper (pg_wrapper) that picks the
        # version and then runs it, a tenth of a second a call: hundreds of calls per test file
        result = sh('runuser', '-u', 'postgres', '--', f'{PG_BIN}/psql', '-h', self.pgsock,
                    '-d', db, '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', sql)
        return result.stdout.strip()

    def write_settings(self, **overrides: dict) -> None:
        """The node's config.ini; overrides = {section: {key: value}}, a value None leaves
        the key out (the package's default applies)."""
        sections = {
            'paths': {
                'ha_conf': '/etc/xivo/ha.conf',
                'sentinel_dir': '/var/lib/wazo',
                'state_dir': self.state_dir,
                'lock_dir': os.path.join(self.root, 'lock'),
                'log_file': self.log_file,
                'postgresql_conf_dir': self.pgdata,
                'monitoring_dir': os.path.join(self.root, 'monitoring'),
                'prometheus_textfile': os.path.join(self.root, 'node-exporter', 'wazo_ha.prom'),
                'fail2ban_jail': os.path.join(self.root, 'fail2ban', 'jail.d', 'wazo-ha.conf'),
            },
            'database': {
                'local_dsn': self.local_dsn,
                'connect_timeout': '5',
                'reload_command': ' '.join(self._pg_ctl('reload')) if self.with_postgres
                else '/bin/true',
                'restart_command': ' '.join(self._pg_ctl('-w', '-m', 'fast', 'restart'))
                if self.with_postgres else '/bin/true',
                # the default runuser -u postgres -- psql where there is a cluster; none: no role
                **({} if self.with_postgres else {'admin_psql': ''}),
                'passfile': self.passfile,
                'subscription_passfile': os.path.join(self.root, 'subscription.pgpass'),
                # the package's default is continuous; the tests of the hourly copy, the
                # failover, the files and the access of a slave run the documented opt-out.
                # Tests of the default pass mode=None (not written), those of the stream
                # mode=continuous (stream_helpers.continuous_settings)
                'mode': 'hourly',
            },
            'check': {'probe_interval': '1', 'down_after': '3', 'up_after': '4',
                      'run_for': '0', 'probe_timeout': '1'},
            'sync': {'ssh_key': '/root/.ssh/xivo_id_rsa', 'connect_timeout': '3',
                     'record_dir': os.path.join(self.root, 'failback-record'),
                     # the package's command from the checkout, in the slave's SSH session
                     # (its settings: /etc/wazo-ha/config.ini, the node's own there)
                     'pair_command': f'env PYTHONPATH={REPO} PYTHONDONTWRITEBYTECODE=1 '
                                     f'/usr/bin/python3 {BIN_DIR}/wazo-ha-config pair-receive'},
            'mail': {'sendmail': os.path.join(self.root, 'stand-ins', 'sendmail')},
            'wazo_api': {'enabled': 'false'},
        }
        for section, values in overrides.items():
            sections.setdefault(section, {}).update(values)
        for values in sections.values():  # None: the key not written (the package's default)
            for key in [k for k, v in values.items() if v is None]:
                del values[key]
        with open(self.config, 'w') as f:
            for section, values in sections.items():
                f.write(f'[{section}]\n')
                for key, value in values.items():
                    value = str(value).replace('\n', '\n    ')
                    f.write(f'{key} = {value}\n')
                f.write('\n')

    def set_root_password(self, password: str) -> None:
        """Inside the node only: /etc/shadow is a bind-mounted copy with this root password."""
        hashed = sh('openssl', 'passwd', '-6', password).stdout.strip()
        shadow = os.path.join(self.root, 'shadow')
        with open('/etc/shadow') as f:
            lines = f.read().splitlines()
        with open(shadow, 'w') as f:
            for line in lines:
                fields = line.split(':')
                if fields[0] == 'root':
                    fields[1] = hashed
                f.write(':'.join(fields) + '\n')
        os.chmod(shadow, 0o640)
        sh(*self.nsenter(['mount', '--bind', shadow, '/etc/shadow']))

    def password_answers(self, password: str, name: str = 'askpass') -> dict:
        """The environment that makes ssh, run in this node, type `password` when asked
        (what an administrator does once for wazo-sync -i)."""
        askpass = os.path.join(self.root, name)
        with open(askpass, 'w') as f:
            f.write(f'#!/bin/sh\necho {password}\n')
        os.chmod(askpass, 0o755)
        return {'SSH_ASKPASS': askpass, 'SSH_ASKPASS_REQUIRE': 'force', 'DISPLAY': ':0'}

    def start_sshd(self) -> None:
        keydir = os.path.join(self.root, 'sshd')
        os.makedirs(keydir, exist_ok=True)
        hostkey = os.path.join(keydir, 'host_ed25519')
        if not os.path.exists(hostkey):
            sh('ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', hostkey)
        cfg = os.path.join(keydir, 'sshd_config')
        with open(cfg, 'w') as f:
            f.write(textwrap.dedent(f'''\
                ListenAddress {self.ip}
                HostKey {hostkey}
                PidFile {keydir}/sshd.pid
                PermitRootLogin yes
                PasswordAuthentication yes
                KbdInteractiveAuthentication no
                UsePAM yes
                AuthorizedKeysFile /root/.ssh/authorized_keys
                StrictModes yes
                Subsystem sftp internal-sftp
                '''))
        os.makedirs('/run/sshd', exist_ok=True)
        result = self.run('/usr/sbin/sshd', '-f', cfg, '-E', os.path.join(keydir, 'sshd.log'))
        assert result.returncode == 0, result.stderr
        for _ in range(150):
            with contextlib.suppress(OSError, ValueError), open(f'{keydir}/sshd.pid') as f:
                self.sshd_pid = int(f.read())
                return
            time.sleep(0.1)
        with open(os.path.join(keydir, 'sshd.log')) as f:
            log = f.read()[-2000:]
        raise AssertionError(f'{self.name}: sshd wrote no pid file in 15 s; its log: {log}')

    def stop_sshd(self) -> None:
        """Stop the node's sshd and wait until it is gone (no half-closed listener left)."""
        if self.sshd_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.sshd_pid, signal.SIGTERM)
            for _ in range(100):
                try:
                    os.kill(self.sshd_pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            self.sshd_pid = None

    def lock_held(self, command: str):
        """Another process holds the command's lock (as a running instance would)."""
        return flock_held(os.path.join(self.root, 'lock', f'{command}.lock'))

    def start_sip_server(self, port: int = 5060) -> None:
        """A real SIP server (kamailio, from Debian) on the node's address, udp and tcp, that
        answers OPTIONS with 200 as Asterisk does: the master's telephony, for the SIP probe.
        Node.teardown kills it with every other process of the namespace."""
        base = os.path.join(self.root, 'kamailio')
        os.makedirs(base, exist_ok=True)
        cfg = os.path.join(base, 'kamailio.cfg')
        with open(cfg, 'w') as f:
            f.write(textwrap.dedent(f'''\
                #!KAMAILIO
                debug=2
                log_stderror=yes
                children=1
                tcp_children=1
                auto_aliases=no
                listen=udp:{self.ip}:{port}
                listen=tcp:{self.ip}:{port}
                mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
                loadmodule "sl.so"
                request_route {{
                    if (method == "OPTIONS") {{
                        sl_send_reply("200", "OK");
                        exit;
                    }}
                    sl_send_reply("403", "Forbidden");
                }}
                '''))
        log = open(os.path.join(base, 'kamailio.log'), 'ab')
        # -DD: stays in the foreground (with its children); small shared/private memory
        self.sip_server = self.popen('kamailio', '-DD', '-E', '-m', '8', '-M', '4', '-f', cfg,
                                     '-P', os.path.join(base, 'kamailio.pid'), '-Y', base,
                                     stdout=log, stderr=log, start_new_session=True)
        log.close()
        for _ in range(100):
            listening = self.run('ss', '-Hln', f'sport = :{port}').stdout
            if listening.count(f'{self.ip}:{port}') >= 2:  # udp and tcp
                return
            assert self.sip_server.poll() is None, 'kamailio exited: see ' + base
            time.sleep(0.1)
        raise AssertionError(f'kamailio does not listen on {self.ip}:{port}')

    @property
    def registrar_script(self) -> str:
        """sip_registrar.control_script of the node, when use_sip_registrar made one."""
        return os.path.join(self.root, 'stand-ins', 'sip-registrar')

    def use_sip_registrar(self, min_expiry: int = 180, max_expiry: int = 300,
                          default_expiry: int = 240, delay: float = 0, port: int = 5060) -> None:
        """From now on the node's telephony (wazo-service start/stop) includes a SIP registrar
        and proxy (kamailio, sip_registrar.py), started `delay` seconds after the start."""
        import sip_registrar
        base = os.path.join(self.root, 'registrar')
        os.makedirs(base, exist_ok=True)
        cfg = os.path.join(base, 'kamailio.cfg')
        with open(cfg, 'w') as f:
            f.write(sip_registrar.config(self.ip, port, self.registrar_ctl, min_expiry,
                                         max_expiry, default_expiry))
        self.set_registrar_delay(delay)
        with open(self.registrar_script, 'w') as f:
            f.write(sip_registrar.control_script(cfg, base, os.path.join(base, 'delay'), port))
        os.chmod(self.registrar_script, 0o755)

    def set_registrar_delay(self, delay: float) -> None:
        with open(os.path.join(self.root, 'registrar', 'delay'), 'w') as f:
            f.write(f'{delay:g}\n')

    @property
    def registrar_ctl(self) -> str:
        return os.path.join(self.root, 'registrar', 'kamailio.ctl')

    def registrar_running(self) -> bool:
        return self.run(self.registrar_script, 'running').returncode == 0

    def registered(self) -> list[str]:
        """The addresses of record registered on the node's registrar (kamcmd ul.dump)."""
        import sip_registrar
        return sip_registrar.registered(self.run('kamcmd', '-s', f'unix:{self.registrar_ctl}',
                                                 'ul.dump', 'brief').stdout)

    def stop_sip_server(self) -> None:
        """Kill the SIP server at once (a crashed Asterisk), with all its processes."""
        server = self.sip_server
        if server is not None and server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        self.sip_server = None

    def link(self, up: bool) -> None:
        """Cut or restore the node's network link (from the hub side: the node cannot tell)."""
        sh('ip', '-n', self.bed.hub, 'link', 'set', self.hub_if, 'up' if up else 'down')

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_sip_server()
        if self.with_postgres and os.path.exists(os.path.join(self.pgdata, 'postmaster.pid')):
            with contextlib.suppress(Exception):
                sh(*self.nsenter(self._pg_ctl('-m', 'immediate', '-w', 'stop')), check=False,
                   timeout=30)
        _kill_netns(self.ns)
        sh('ip', 'netns', 'del', self.ns, check=False)
        sh('umount', self.mnt, check=False)


def _kill_netns(ns: str) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = sh('ip', 'netns', 'pids', ns, check=False).stdout.split()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), sig)
        for _ in range(30):
            if not sh('ip', 'netns', 'pids', ns, check=False).stdout.split():
                return
            time.sleep(0.1)


# Host directories that did not exist and were created as bind-mount points for the nodes
# (/etc/wazo-ha, /etc/asterisk...). Removing one while another testbed's node has its bind
# mount on it detaches that mount in the node's namespace (the kernel does so for a removed
# mount point), and the node then writes into the host's real directories. So they are
# registered host-wide and removed only by the last live testbed, under one lock.
REGISTRY_LOCK = '/run/wazo-ha-testbeds.lock'
REGISTRY = '/run/wazo-ha-testbeds.mountpoints'
NSDIR_PREFIX = 'wazo-ha-testbed-'


@contextlib.contextmanager
def _registry_lock():
    fd = os.open(REGISTRY_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _lock_directory(path: str) -> int:
    """The directory locked (flock) by this process for as long as the descriptor stays
    open: its owner's life, which another process tells by trying the lock (_owner_alive).
    Never passed on to a child (close-on-exec)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _owner_alive(path: str) -> bool | None:
    """Whether the process that locked this directory (_lock_directory) still runs: its lock
    is held (unlike a process number, never mistaken for another process). None: not ours
    to judge (gone, a link, another user's)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False
    finally:
        os.close(fd)


def _live_testbeds() -> set[str]:
    """Under the registry lock: the tags of the testbeds whose owner process runs (a testbed
    claims its directory and takes its lock under the registry lock: none is half made)."""
    return {name[len(NSDIR_PREFIX):] for name in os.listdir('/run')
            if name.startswith(NSDIR_PREFIX) and _owner_alive(os.path.join('/run', name))}


def live_testbeds() -> set[str]:
    """The tags of the testbeds whose owner process runs, this one's included."""
    with _registry_lock():
        return _live_testbeds()


def _remove_registered_mountpoints(keep_for: set[str]) -> list[str]:
    """Under the registry lock: remove the registered mount points when no live testbed
    is left besides those of `keep_for`. Returns what was removed."""
    if _live_testbeds() - keep_for:
        return []
    removed = []
    with contextlib.suppress(FileNotFoundError), open(REGISTRY) as f:
        for path in f.read().splitlines():
            with contextlib.suppress(OSError):
                os.rmdir(path)
                removed.append(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(REGISTRY)
    return removed


def cleanup_leftovers() -> list[str]:
    """Remove what an interrupted (killed) test run left: namespaces, mounts, clusters, its
    directory. Testbeds and directories whose owner runs are never touched."""
    removed = []
    with _registry_lock():
        alive = _live_testbeds()
        for line in sh('ip', 'netns', 'list', check=False).stdout.splitlines():
            ns = line.split()[0] if line.split() else ''
            if ns.startswith('whaw') and ns[3:].split('-')[0] not in alive:
                _kill_netns(ns)
                sh('ip', 'netns', 'del', ns, check=False)
                removed.append(ns)
        for name in os.listdir('/run'):
            if name.startswith(NSDIR_PREFIX) and name[len(NSDIR_PREFIX):] not in alive:
                path = os.path.join('/run', name)
                if os.path.isdir(path) and not os.path.islink(path):
                    for mnt in os.listdir(path):
                        sh('umount', os.path.join(path, mnt), check=False)
                    sh('umount', path, check=False)
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
                removed.append(path)
        if not alive:
            removed += _remove_registered_mountpoints(set())
        removed += _sweep_session_dirs()
    return removed


# A run's directory (its testbeds' node roots, the template cluster): locked by its pytest
# process for as long as it lives, so that a later run removes the directory of a killed one.
SESSION_PREFIX = 'wazo-ha-tests-'


@contextlib.contextmanager
def session_directory():
    """A new directory for this run's testbeds, locked (flock on the directory) until it is
    removed at the end of the block, or until this process dies; made and locked under the
    registry lock, which the sweep of killed runs' directories holds."""
    with _registry_lock():
        path = tempfile.mkdtemp(prefix=SESSION_PREFIX)
        fd = _lock_directory(path)
    try:
        # the daemons of the nodes (postgres, sshd) pass through, no other user opens it (a
        # shared lock taken by another user would keep a killed run's directory forever)
        os.chmod(path, 0o711)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def _mount_points_under(path: str) -> list[str]:
    """The mount points at or below `path` (its real path), as /proc/self/mountinfo lists
    them (its octal escapes, such as \\040 for a space, decoded)."""
    path = os.path.realpath(path)
    with open('/proc/self/mountinfo') as f:
        points = [re.sub(r'\\([0-7]{3})', lambda m: chr(int(m.group(1), 8)), line.split()[4])
                  for line in f]
    return [p for p in points if p == path or p.startswith(path + '/')]


def _sweep_session_dirs() -> list[str]:
    """Under the registry lock: remove the directories of runs that were killed (nobody holds
    their lock); never one with something mounted under it, never through a link."""
    removed = []
    top = tempfile.gettempdir()
    for name in os.listdir(top):
        path = os.path.join(top, name)
        if name.startswith(SESSION_PREFIX) and _owner_alive(path) is False \
                and not _mount_points_under(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


class Testbed:
    """Nodes master (198.18.0.1), slave (.2) and optionally others on one bridge."""

    def __init__(self, workdir: str, template: str | None):
        self.template = template
        self.tag = self.prefix = self.hub = self.nsdir = ''  # claimed by start()
        self.workdir = tempfile.mkdtemp(prefix='wazo-ha-bed-', dir=workdir)
        os.chmod(self.workdir, 0o755)
        self.nodes: dict[str, Node] = {}
        self._nsdir_mounted = False
        self._owner_lock: int | None = None

    def _claim_tag(self) -> None:
        """A tag no live testbed holds: its directory under /run is created exclusively, so
        two testbeds drawing the same tag never share (nor tear down) each other's names."""
        for _ in range(100):
            tag = 'w' + secrets.token_hex(3)
            nsdir = os.path.join('/run', f'{NSDIR_PREFIX}{tag}')
            try:
                os.mkdir(nsdir, 0o711)
            except FileExistsError:
                continue
            self.tag, self.nsdir = tag, nsdir
            self.prefix = f'wha{tag}'
            self.hub = f'{self.prefix}-hub'
            return
        raise RuntimeError('no free testbed tag under /run')

    def start(self) -> Testbed:
        # the tag and its lock under the lock that another run's cleanup holds while it
        # lists the live testbeds: it never takes this one for a leftover
        with _registry_lock():
            self._claim_tag()
            self._owner_lock = _lock_directory(self.nsdir)   # held while this testbed lives
        sh('mount', '--bind', self.nsdir, self.nsdir)
        self._nsdir_mounted = True
        sh('mount', '--make-private', self.nsdir)
        sh('ip', 'netns', 'add', self.hub)
        sh('ip', '-n', self.hub, 'link', 'add', 'br0', 'type', 'bridge')
        sh('ip', '-n', self.hub, 'link', 'set', 'br0', 'up')
        return self

    def add_node(self, name: str, host: int, with_postgres: bool = True) -> Node:
        node = Node(self, name, f'{SUBNET}.{host}', with_postgres)
        self.nodes[name] = node
        node.build()
        return node

    def ensure_mountpoint(self, path: str) -> None:
        """A host directory to bind-mount a node's own on; created (and registered for the
        last testbed to remove) when missing."""
        with _registry_lock():
            if os.path.isdir(path):
                return
            missing = []
            p = path
            while not os.path.exists(p):
                missing.append(p)
                p = os.path.dirname(p)
            os.makedirs(path)
            with open(REGISTRY, 'a') as f:
                f.write(''.join(m + '\n' for m in missing))  # deepest first

    def close(self) -> None:
        if not self.tag:  # never started: no name of its own to remove
            shutil.rmtree(self.workdir, ignore_errors=True)
            return
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.teardown()
        _kill_netns(self.hub)
        sh('ip', 'netns', 'del', self.hub, check=False)
        if self._nsdir_mounted:
            sh('umount', self.nsdir, check=False)
        with _registry_lock():
            shutil.rmtree(self.nsdir, ignore_errors=True)
            if self._owner_lock is not None:
                os.close(self._owner_lock)
                self._owner_lock = None
            _remove_registered_mountpoints(set())
        shutil.rmtree(self.workdir, ignore_errors=True)


class Cron(threading.Thread):
    """Starts a program on a node every `period` seconds, as cron does: `argv`, by default
    xivo-check-master-status."""

    def __init__(self, node: Node, period: float, argv: Sequence[str] | None = None):
        super().__init__(daemon=True)
        self.node, self.period = node, period
        self.argv = list(argv) if argv is not None else [
            '/usr/bin/python3', os.path.join(BIN_DIR, 'xivo-check-master-status')]
        self.stop = threading.Event()
        self.procs: list[subprocess.Popen] = []

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stop.is_set():
            self.procs = [p for p in self.procs if p.poll() is None]
            self.procs.append(self.node.popen(*self.argv, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
            next_at += self.period
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=5)
        for p in self.procs:
            p.kill()
            p.wait()


def calls_after(node: Node, what: str, since: float) -> list[float]:
    """Wall-clock times of the stand-in calls `what` made after `since`."""
    out = []
    for line in node.stand_in_calls(timestamps=True):
        stamp, call = line.split(' ', 1)
        if call.strip() == what and float(stamp) > since:
            out.append(float(stamp))
    return out


def wait_call(node: Node, what: str, since: float, timeout: float) -> float | None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = calls_after(node, what, since)
        if found:
            return found[0]
        time.sleep(0.2)
    return None
