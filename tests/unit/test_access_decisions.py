"""Node access without I/O: what each role should have (converge.target), our pg_hba.conf
blocks and conf.d file for both roles and modes in one render, and the wazo-sync -i pairing
protocol (what the master sends, what the slave accepts)."""

import os
import subprocess

import pytest

from wazo_ha_common import role, settings
from wazo_ha_common import converge
from wazo_ha_common.access import pairing, pg_access, pg_files, stream_access
from wazo_ha_common.files import sync
from wazo_ha_common.errors import InputError

HBA = 'local all postgres peer\nhost all all 127.0.0.1/32 scram-sha-256\n'
REPL, STREAM = 'wazo_ha_replication', 'wazo_ha_stream'


@pytest.mark.parametrize('node_type, mode, expected', [
    ('slave', 'hourly', (True, False, False)),
    ('slave', 'continuous', (True, False, True)),
    ('master', 'hourly', (False, False, False)),
    ('master', 'continuous', (False, True, False)),
    ('disabled', 'continuous', (False, False, False)),
])
def test_what_each_role_should_have(node_type, mode, expected):
    remote = '' if node_type == 'disabled' else '198.18.0.9'
    t = converge.target(role.HaConfig(node_type, remote), mode)
    assert (t.slave, t.stream_master, t.subscription) == expected


def test_a_subscription_stays_only_on_a_continuous_slave_of_the_master_it_streams_from():
    sub = {'slot': 'wazo_ha_slot_1', 'conninfo': 'host=198.18.0.1 port=5432 dbname=asterisk'}
    slave = role.HaConfig('slave', '198.18.0.1')
    assert converge.keeps_subscription(converge.target(slave, 'continuous'), sub)
    assert not converge.keeps_subscription(converge.target(slave, 'hourly'), sub)
    other = role.HaConfig('slave', '198.18.0.7')
    assert not converge.keeps_subscription(converge.target(other, 'continuous'), sub)
    for node in (role.HaConfig('master', '198.18.0.1'), role.HaConfig('disabled', '')):
        assert not converge.keeps_subscription(converge.target(node, 'continuous'), sub)


def test_one_render_for_both_roles_and_modes_keeps_every_other_line():
    slave = pg_files.Wanted(master_ip='198.18.0.1', listen='198.18.0.2, localhost')
    hba, conf = pg_files.render(HBA, slave, 'asterisk', REPL, STREAM)
    assert hba.splitlines()[0] == pg_access.BEGIN and hba.endswith(HBA)
    assert f'hostssl asterisk {REPL} 198.18.0.1/32 scram-sha-256' in hba
    assert STREAM not in hba
    assert conf.splitlines()[1:] == ["listen_addresses = '198.18.0.2, localhost'"]
    # the same node made a continuous master of that address: the slave's block goes, the
    # stream block comes, conf.d says wal_level
    master = pg_files.Wanted(stream_slave_ip='198.18.0.1', listen='198.18.0.2, localhost',
                             keep_mb=512)
    hba2, conf2 = pg_files.render(hba, master, 'asterisk', REPL, STREAM)
    assert hba2.splitlines()[0] == stream_access.BEGIN and hba2.endswith(HBA)
    assert REPL not in hba2
    assert 'wal_level = logical' in conf2 and 'max_slot_wal_keep_size = 512MB' in conf2
    # neither: the file as it was before, byte for byte, and no conf.d file
    assert pg_files.render(hba2, pg_files.Wanted(), 'asterisk', REPL, STREAM) == (HBA, None)
    assert pg_files.render(hba, slave, 'asterisk', REPL, STREAM) == (hba, conf), 'idempotent'


SLAVE_HEADER = '# Managed by wazo-ha-config: the master connects to this slave for replication.'
MASTER_HEADER = '# Managed by wazo-ha-config: the slave streams the changes of this master.'
INSTALL_HEADER = ['# Managed by wazo-ha-config: continuous mode, so that the next restart of '
                  'PostgreSQL', '# (the one PUT /ha does) makes it ready to stream to a slave.']


@pytest.mark.parametrize('want, lines', [
    (pg_files.Wanted(master_ip='198.18.0.1', listen='198.18.0.2, localhost'),
     [SLAVE_HEADER, "listen_addresses = '198.18.0.2, localhost'"]),
    (pg_files.Wanted(master_ip='198.18.0.1', listen='198.18.0.2, localhost', continuous=True),
     [SLAVE_HEADER, "listen_addresses = '198.18.0.2, localhost'", 'wal_level = logical']),
    (pg_files.Wanted(stream_slave_ip='198.18.0.2', listen='198.18.0.1, localhost', keep_mb=1024,
                     continuous=True),
     [MASTER_HEADER, 'wal_level = logical', 'max_slot_wal_keep_size = 1024MB',
      "listen_addresses = '198.18.0.1, localhost'"]),
    (pg_files.Wanted(listen='*', continuous=True),
     [*INSTALL_HEADER, 'wal_level = logical', "listen_addresses = '*'"]),
    (pg_files.Wanted(), None),
])
def test_conf_d_for_each_role_and_mode(want, lines):
    """One renderer of conf.d/wazo-ha.conf: a slave listens toward its master (and in
    continuous mode is ready to be made master); a continuous master adds what a slot needs; a
    continuous node not yet configured what only a restart applies; an hourly node that is not
    a slave has no file. Each text written out here, its first line saying why it is there."""
    conf = pg_files.render_conf(want)
    assert conf == (None if lines is None else ''.join(line + '\n' for line in lines))
    assert pg_files.render(HBA, want, 'asterisk', REPL, STREAM)[1] == conf, 'render uses it'


def test_our_blocks_move_back_first_when_something_was_put_before_them():
    slave = pg_files.Wanted(master_ip='198.18.0.1', listen='x')
    hba, _ = pg_files.render(HBA, slave, 'asterisk', REPL, STREAM)
    pushed = 'host asterisk postgres 198.18.0.1/32 trust\n' + hba
    again, _ = pg_files.render(pushed, slave, 'asterisk', REPL, STREAM)
    assert again.splitlines()[0] == pg_access.BEGIN
    assert again.splitlines()[5] == 'host asterisk postgres 198.18.0.1/32 trust', 'after ours'


def offer(stream_password=None):
    stream = stream_access.StreamPairing(False, stream_password) if stream_password else None
    return pairing.Offer('198.18.0.2', False, pg_access.scram_verifier('replication-secret'),
                         stream)


def test_what_the_master_sends_holds_the_verifier_and_the_command_no_secret(tmp_path):
    """The replication password never leaves the master (its verifier does); the stream
    password travels on stdin only, never in the remote command nor a repr."""
    secret = 'S3cr3t-stream-password-xyz'
    sent = offer(secret)
    lines = sent.lines().splitlines()
    assert lines[0] == pairing.HEADER and lines[-1] == 'end'
    assert lines[1].startswith('replication-verifier SCRAM-SHA-256$4096:')
    assert lines[2] == f'stream-password {secret}'
    assert 'replication-secret' not in sent.lines()
    assert secret not in repr(sent)
    config = tmp_path / 'config.ini'
    config.write_text('[sync]\npair_command = /usr/sbin/wazo-ha-config pair-receive\n')
    command = pairing.remote_command(settings.load(str(config)), 'AUTHORIZE')
    assert command == '{ AUTHORIZE; } || exit 1; /usr/sbin/wazo-ha-config pair-receive'
    assert pairing.parse(sent.lines().splitlines(True)) == \
        pairing.Received(sent.verifier, secret)
    assert secret not in repr(pairing.parse(sent.lines().splitlines(True)))


@pytest.mark.parametrize('lines, why', [
    (['hello\n'], 'not the wazo-sync -i pairing protocol'),
    ([pairing.HEADER + '\n', 'replication-verifier x\n', 'end\n'], 'unexpected line'),
    ([pairing.HEADER + '\n', "replication-verifier SCRAM-SHA-256$4096:abcd$ab'cd:abcd\n",
      'end\n'], 'unexpected line'),
    ([pairing.HEADER + '\n', 'stream-password ' + 'a' * 20 + '\n', 'end\n'],
     'no replication-verifier'),
    ([pairing.HEADER + '\n', 'stream-password has:colon-and-more\n', 'end\n'], 'unexpected'),
    ([pairing.HEADER + '\n'], 'ended before'),
    ([pairing.HEADER + '\n', 'shell-command id\n', 'end\n'], 'unexpected line'),
])
def test_the_slave_accepts_nothing_but_the_protocol(lines, why):
    """A verifier goes into SQL on the slave: only its exact shape is accepted."""
    with pytest.raises(InputError, match=why):
        pairing.parse(lines)
    sent = offer()
    twice = sent.lines().replace('end\n', sent.lines().splitlines(True)[1] + 'end\n')
    with pytest.raises(InputError, match='repeated'):
        pairing.parse(twice.splitlines(True))


def test_the_key_line_is_read_by_the_authorize_script_and_the_rest_left_to_pair_receive(tmp_path):
    """One stdin for both: the shell's `read` takes the key's line only; pair_command (here
    `cat`) gets the protocol intact."""
    home = tmp_path / 'root'
    home.mkdir()
    key_line = 'from="198.18.0.1",restrict ssh-ed25519 AAAAC3Nza-test-key wazo-ha-sync'
    protocol = offer('S3cr3t-stream-password-xyz').lines()
    script = '{ ' + sync.AUTHORIZE_SCRIPT + '; } || exit 1; cat'
    result = subprocess.run(['sh', '-c', script], input=key_line + '\n' + protocol, text=True,
                            capture_output=True, env={**os.environ, 'HOME': str(home)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == 'replaced 0'
    assert result.stdout.split('\n', 1)[1] == protocol
    assert (home / '.ssh' / 'authorized_keys').read_text() == key_line + '\n'


def test_continuous_mode_has_wal_level_logical_on_every_role_before_put_ha_restarts():
    """The default (continuous): a node not yet configured (the installation's converge) has
    wal_level = logical and listens on every address, so that the PostgreSQL restart of PUT /ha
    activates both; made master, the same values (nothing left for another restart); a slave
    keeps wal_level too (PUT /ha may make it master). Hourly: no file but a slave's."""
    installed = pg_files.Wanted(listen='*', continuous=True)
    _, conf = pg_files.render(HBA, installed, 'asterisk', REPL, STREAM)
    assert conf.splitlines()[2:] == ['wal_level = logical', "listen_addresses = '*'"]
    master = pg_files.Wanted(stream_slave_ip='198.18.0.2', listen='*', continuous=True)
    _, conf2 = pg_files.render(HBA, master, 'asterisk', REPL, STREAM)
    assert {line for line in conf2.splitlines() if not line.startswith('#')} >= {
        line for line in conf.splitlines() if not line.startswith('#')}
    slave = pg_files.Wanted(master_ip='198.18.0.1', listen='198.18.0.2, localhost',
                            continuous=True)
    _, conf3 = pg_files.render(HBA, slave, 'asterisk', REPL, STREAM)
    assert conf3.splitlines()[1:] == ["listen_addresses = '198.18.0.2, localhost'",
                                      'wal_level = logical']
    assert pg_files.render(HBA, pg_files.Wanted(), 'asterisk', REPL, STREAM) == (HBA, None)
