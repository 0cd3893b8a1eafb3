"""The pairing protocol of `wazo-sync -i`, end to end.

On the master, wazo-sync -i opens one SSH session to the slave as root (the slave's root
password, asked once) and runs there:

    { AUTHORIZE_SCRIPT; } || exit 1; [sync] pair_command

(pair_command is `/usr/sbin/wazo-ha-config pair-receive` by default). Standard input carries:

    <the authorized_keys line>            read by AUTHORIZE_SCRIPT (files: see sync)
    wazo-ha-pairing 1                      read by pair-receive from here on
    replication-verifier SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>
    stream-password <password>             only from a master in continuous mode
    end

pair-receive, on the slave, with the slave's own settings: refuses unless ha.conf makes this
node a slave (exit NOT_A_SLAVE); runs this node's converge (so that a slave configured only
through Wazo's PUT /ha has its replication role and pg_hba.conf block); sets the role's
password from the verifier (psql as the superuser, statement logging off; exit
PAIRING_FAILED when that or the converge fails); stores the stream password in root's
[database] passfile as `MASTER:PORT:DATABASE:STREAM_USER:PASSWORD`, MASTER being ha.conf's
remote_address (exit STREAM_STORE_FAILED). It prints one line per thing done; the master
shows them. The replication password itself never leaves the master; nothing secret is on a
command line."""

from __future__ import annotations

import logging
import os
import re
import secrets
import shlex
from dataclasses import dataclass
from typing import Callable, Iterable

from .. import role
from ..adapters.network import source_address
from ..adapters.system import Completed, read_text, run, single_instance, tail, write_atomic
from ..decisions.pgpass import pgpass_password, pgpass_prefix, with_pgpass_line
from ..errors import InputError, WazoHaError
from ..files import sync
from ..jobs import CONVERGE, SYNC
from ..settings import CONTINUOUS, Settings
from . import converge, pg_access, stream_access

logger = logging.getLogger('wazo-ha')

HEADER = 'wazo-ha-pairing 1'
# exit statuses of the remote command (1: the key could not be authorised)
PAIRING_FAILED = pg_access.PAIRING_FAILED            # 3: the replication role has no password
STREAM_STORE_FAILED = pg_access.STREAM_STORE_FAILED  # 4: the stream password not stored
NOT_A_SLAVE = 5
NOT_INSTALLED = 127                                  # the shell found no pair_command

VERIFIER = re.compile(r'SCRAM-SHA-256\$[0-9]{1,7}:[A-Za-z0-9+/=]{4,100}\$[A-Za-z0-9+/=]{4,100}'
                      r':[A-Za-z0-9+/=]{4,100}')
PASSWORD = re.compile(r'[A-Za-z0-9_-]{16,200}')     # secrets.token_urlsafe


class PairingError(pg_access.PairingError):
    """The slave could not be paired."""


class NotASlave(PairingError):
    exit_code = NOT_A_SLAVE


class RoleNotPaired(PairingError):
    exit_code = PAIRING_FAILED


class StreamNotStored(PairingError):
    exit_code = STREAM_STORE_FAILED


# the master's side

@dataclass(frozen=True)
class Offer:
    """What the master sends after the key's line: the verifier, and in continuous mode the
    stream role's password."""
    slave: str
    kept: bool                     # the replication password in the password file was kept
    verifier: str
    stream: stream_access.StreamPairing | None

    def __repr__(self) -> str:     # never the stream password in a traceback or a log
        return f'Offer(slave={self.slave!r}, kept={self.kept}, stream={self.stream!r})'

    def lines(self) -> str:
        return (f'{HEADER}\nreplication-verifier {self.verifier}\n'
                + (f'stream-password {self.stream.password}\n' if self.stream else '')
                + 'end\n')


def prepare(settings: Settings, slave_ip: str) -> Offer:
    """The replication role's password (kept, or made and written to [database] passfile
    first) as a verifier; in continuous mode the stream role's, its verifier set here."""
    d = settings.database
    prefix = pgpass_prefix(slave_ip, d.remote_port, d.name, d.remote_user)
    text = read_text(d.passfile) or ''
    password = pgpass_password(text, prefix)
    kept = bool(password)
    if not kept:  # written first: a run cut short leaves nothing the next run cannot finish
        password = secrets.token_urlsafe(32)
        write_atomic(d.passfile, with_pgpass_line(text, prefix, password), mode=0o600)
    os.chmod(d.passfile, 0o600)
    return Offer(slave_ip, kept, pg_access.scram_verifier(password),
                 stream_access.prepare_pairing(settings))


def remote_command(settings: Settings, authorize_script: str) -> str:
    """The shell command the SSH session runs on the slave (no data in it)."""
    command = ' '.join(shlex.quote(a) for a in settings.sync.pair_command)
    return '{ ' + authorize_script + '; } || exit 1; ' + command


def finish(settings: Settings, offer: Offer, result: Completed) -> list[str]:
    """After the remote command: what the slave said it did; PairingError naming what failed
    when the key was authorised but the rest was not."""
    d = settings.database
    why = tail('\n'.join(line for line in result.stderr.splitlines()
                         if not line.startswith('Warning: Permanently added')), 2) or 'no output'
    if result.returncode == NOT_INSTALLED:
        raise PairingError('the key is authorised on the slave, but it has no '
                           f'{" ".join(settings.sync.pair_command)} ([sync] pair_command): '
                           f'install the same wazo-ha version on the slave ({why})')
    if result.returncode == NOT_A_SLAVE:
        raise PairingError(f'the key is authorised on the slave, but the slave refuses to pair: '
                           f'{why}')
    if result.returncode == PAIRING_FAILED:
        raise PairingError(f'the key is authorised on the slave, but the password of the role '
                           f'{d.remote_user} could not be set there: {why}')
    if result.returncode == STREAM_STORE_FAILED:
        raise PairingError("the key is authorised on the slave, but the stream role's password "
                           f'could not be stored there: {why}')
    if result.returncode != 0:
        return []
    said = [f'on the slave: {line[len("slave: "):]}' for line in result.stdout.splitlines()
            if line.startswith('slave: ')]
    said.append(f'kept the password of the role {d.remote_user} ({d.passfile}) and set it again '
                'on the slave' if offer.kept else
                f'made a password for the role {d.remote_user}, kept in {d.passfile} (0600); '
                'set on the slave as a SCRAM verifier only')
    if offer.stream:
        said.append(stream_access.pairing_sentence(settings, offer.stream))
    return said


def setup(settings: Settings, tell: Callable[[str], None]) -> list[str]:
    """wazo-sync -i: make the key if needed, authorise it on the slave and pair the database
    in the same SSH session, check both work.

    Returns what was done; `tell` shows what the user needs before ssh asks for the slave's
    password: the slave's host key fingerprints, then which password is asked."""
    slave = role.resolve_peer(settings, None, 'master', 'file synchronisation')
    key = settings.sync.ssh_key
    report = []
    with single_instance(settings.paths.lock_dir, SYNC.name):
        if os.path.exists(key):
            report.append(f'using the existing key {key}')
        else:
            os.makedirs(os.path.dirname(key), mode=0o700, exist_ok=True)
            run(['ssh-keygen', '-q', '-t', 'rsa', '-b', '4096', '-N', '', '-C', sync.KEY_COMMENT,
                 '-f', key], timeout=120)
            report.append(f'created the key {key}')
        os.chmod(key, 0o600)
        os.chown(key, 0, 0)
        public = read_text(key + '.pub')
        if not public:
            raise sync.SyncError(f'{key}.pub is missing: remove {key} and run wazo-sync -i again')
        line = sync.restricted_line(public, source_address(slave), settings.sync.rsyncd_conf)
        target = sync.remote(settings.sync.remote_user, slave)
        if settings.database.mode == CONTINUOUS:  # PUT /ha a minute ago: not converged yet
            try:
                with single_instance(settings.paths.lock_dir, CONVERGE.name, wait=60):
                    converged = converge.converge_and_record(settings)
            except (WazoHaError, OSError) as e:
                raise sync.SyncError(f'node access not converged to ha.conf on this master: '
                                     f'{e}') from None
            for said in converged.changes:
                logger.info('changed: %s', said)
            report += converged.changes
        offer = prepare(settings, slave)
        tell(f'The SSH host key of the slave {slave} (compare it with `ssh-keygen -lf '
             f'/etc/ssh/ssh_host_*_key.pub` on the slave before typing a password):')
        for fingerprint in sync.host_key_fingerprints(settings, slave):
            tell(f'  {fingerprint}')
        tell(f"Authorising {key} on {target}: enter {settings.sync.remote_user}'s password "
             'on the slave when asked. It is asked once, to put the key in the slave\'s '
             'authorized_keys and set the database password there (SSH password login); it is '
             'kept nowhere.')
        tell('Where the slave refuses root password logins (Debian 12\'s sshd: PermitRootLogin '
             'prohibit-password), allow them for this once: on the slave, '
             '`PermitRootLogin yes` in /etc/ssh/sshd_config.d/wazo-ha-pairing.conf and '
             '`systemctl reload ssh`; remove that file after the pairing (README '
             '"Configure", step 4).')
        # stdin: the key's line, then the pairing protocol (never a secret in a command line)
        result = run(['ssh', *sync.ssh_options(settings, batch=False), target,
                      remote_command(settings, sync.AUTHORIZE_SCRIPT)],
                     input=line + '\n' + offer.lines(), timeout=180, check=False)
        paired = finish(settings, offer, result)
        if result.returncode != 0:
            raise sync.SyncError(f'could not authorise the key on {target} (ssh exit status '
                                 f'{result.returncode}): {tail(result.stderr) or "no output"}')
        answer = result.stdout.strip().split()
        if answer[:1] == ['already']:
            report.append('the key was already authorised on the slave')
        else:
            replaced = int(answer[1]) if len(answer) > 1 and answer[1].isdigit() else 0
            report.append(f'authorised the key on {target}: rsync daemon only, from '
                          f'{line.split(chr(34))[1]}' + (f' (replaced {replaced} earlier line(s) '
                                                         'holding the same key)' if replaced else ''))
        sync.check_key(settings, target)
        report.append('checked: the key can write the synced directories on the slave')
        report += paired + [pg_access.check_pairing(settings, slave)]
    for said in report:
        logger.info('wazo-sync -i: %s', said)
    return report


# the slave's side (wazo-ha-config pair-receive)

@dataclass(frozen=True)
class Received:
    verifier: str
    stream_password: str | None

    def __repr__(self) -> str:
        return f'Received(stream={self.stream_password is not None})'


def parse(lines: Iterable[str]) -> Received:
    """The lines after the key's line; InputError (exit 2, nothing done) when they are not the
    protocol's."""
    it = iter(lines)
    if next(it, '').rstrip('\n') != HEADER:
        raise InputError(f'not the wazo-sync -i pairing protocol (expected {HEADER!r} first): '
                         'run wazo-sync -i on the master, with the same wazo-ha version')
    verifier, password = None, None
    for raw in it:
        line = raw.rstrip('\n')
        if line == 'end':
            break
        key, _, value = line.partition(' ')
        if key == 'replication-verifier' and VERIFIER.fullmatch(value) and verifier is None:
            verifier = value
        elif key == 'stream-password' and PASSWORD.fullmatch(value) and password is None:
            password = value
        else:
            raise InputError(f'pairing protocol: unexpected line {key[:30]!r} (a malformed '
                             'or repeated value)')
    else:
        raise InputError("pairing protocol: the master's input ended before 'end'")
    if verifier is None:
        raise InputError('pairing protocol: no replication-verifier line')
    return Received(verifier, password)


def receive(settings: Settings, received: Received) -> list[str]:
    """On the slave: converge, set the role's password, store the stream password; returns
    what was done."""
    config = converge.load_config(settings)
    if config.node_type != 'slave' or not config.remote_address:
        raise NotASlave(f'this node is not a slave (ha.conf says {config.node_type}): configure '
                        'it first (PUT /ha on wazo-confd, or wazo-ha-config set --node-type slave '
                        '--remote-address MASTER), then run wazo-sync -i again')
    role.validate_peer(config.remote_address)
    said = []
    try:
        with single_instance(settings.paths.lock_dir, CONVERGE.name, wait=60):
            outcome = converge.converge_and_record(settings, config)
    except (WazoHaError, OSError) as e:
        raise RoleNotPaired(f'node access not converged to ha.conf: {e}') from None
    for line in outcome.changes:
        logger.info('changed: %s', line)
    for line in outcome.not_applied:   # the fail2ban drop-in: not the pairing's business
        logger.warning('not applied: %s', line)
    said += outcome.changes
    d = settings.database
    try:
        pg_access.admin_psql(settings, pg_access.pairing_sql(d.remote_user, received.verifier))
    except WazoHaError as e:
        raise RoleNotPaired(str(e)) from None
    said.append(f'the role {d.remote_user} may log in, with the password whose SCRAM verifier '
                'the master sent')
    if received.stream_password is not None:
        prefix = pgpass_prefix(config.remote_address, d.remote_port, d.name,
                                         d.stream_user)
        try:
            text = read_text(d.passfile) or ''
            write_atomic(d.passfile, with_pgpass_line(text, prefix,
                                                                received.stream_password),
                         mode=0o600)
        except OSError as e:
            raise StreamNotStored(f'{d.passfile}: {e.strerror or e}') from None
        said.append(f'stored the password of the stream role {d.stream_user} of the master '
                    f'{config.remote_address} in {d.passfile}')
    logger.info('paired with the master %s (wazo-sync -i): %s', config.remote_address,
                '; '.join(said[len(outcome.changes):]))
    return said
