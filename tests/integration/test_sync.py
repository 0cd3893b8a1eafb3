"""wazo-sync -i, wazo-sync and wazo-sync --failback with a real sshd on the slave node."""

import os
import stat

import pytest

PASSWORD = 'slave-root-password'
KEY = '/root/.ssh/xivo_id_rsa'


@pytest.fixture
def nodes(bed):
    master = bed.add_node('master', 1, with_postgres=False)
    slave = bed.add_node('slave', 2)  # wazo-sync -i also sets the database role's password
    slave.set_root_password(PASSWORD)
    slave.start_sshd()
    askpass = os.path.join(master.root, 'askpass')
    with open(askpass, 'w') as f:
        f.write(f'#!/bin/sh\necho {PASSWORD}\n')
    os.chmod(askpass, 0o755)
    master.askpass = {'SSH_ASKPASS': askpass, 'SSH_ASKPASS_REQUIRE': 'force', 'DISPLAY': ':0'}
    assert slave.wazo('wazo-ha-config', 'set', '--node-type', 'slave',
                      '--remote-address', master.ip).returncode == 0
    assert master.wazo('wazo-ha-config', 'set', '--node-type', 'master',
                       '--remote-address', slave.ip).returncode == 0
    return master, slave


def init(master):
    return master.wazo('wazo-sync', '-i', env=master.askpass, timeout=120)


def authorized_keys(slave):
    with open(slave.host_path('/root/.ssh/authorized_keys')) as f:
        return f.read().splitlines()


def write(node, path, content, mode=0o644):
    real = node.host_path(path)
    os.makedirs(os.path.dirname(real), exist_ok=True)
    with open(real, 'w', encoding='utf-8') as f:
        f.write(content)
    os.chmod(real, mode)


def test_init_creates_a_restricted_key_and_is_idempotent(nodes):
    master, slave = nodes
    result = init(master)
    assert result.returncode == 0, result.stderr
    assert 'created the key' in result.stdout and 'rsync with the key works' in result.stdout
    assert 'made a password for the role wazo_ha_replication' in result.stdout
    assert 'accepts wazo_ha_replication with its password, over TLS' in result.stdout
    key = master.host_path(KEY)
    st = os.stat(key)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    lines = authorized_keys(slave)
    assert len(lines) == 1
    assert lines[0].startswith(f'from="{master.ip}",restrict,command="/usr/bin/rrsync /" ssh-rsa ')
    with open(key, 'rb') as f:
        key_bytes = f.read()
    again = init(master)
    assert again.returncode == 0, again.stderr
    assert 'using the existing key' in again.stdout and 'already authorised' in again.stdout
    assert 'kept the password of the role wazo_ha_replication' in again.stdout
    assert authorized_keys(slave) == lines, 'not added twice'
    with open(key, 'rb') as f:
        assert f.read() == key_bytes, 'not overwritten'


def test_the_key_opens_no_shell_on_the_slave(nodes):
    master, slave = nodes
    assert init(master).returncode == 0
    result = master.run('ssh', '-i', KEY, '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes',
                        f'root@{slave.ip}', 'touch /tmp/wazo-ha-pwned; id')
    assert result.returncode != 0
    assert 'uid=0' not in result.stdout
    assert not os.path.exists('/tmp/wazo-ha-pwned')
    assert 'rrsync' in result.stderr or 'rsync' in result.stderr


def test_sync_copies_files_and_deletes_what_the_master_deleted(nodes):
    master, slave = nodes
    assert init(master).returncode == 0
    write(master, '/etc/asterisk/extensions_extra.d/custom.conf', '[custom]\n', 0o640)
    write(master, '/etc/asterisk/extensions_extra.d/sub/dir/deep.conf', 'deep\n')
    write(master, '/var/lib/asterisk/agi-bin/script.agi', '#!/bin/sh\n', 0o755)
    write(master, '/var/lib/asterisk/moh/défaut/musique-été.wav', 'RIFF' + 'x' * 1000)
    big = master.host_path('/var/lib/wazo/sounds/tenants/t1/playback/big.wav')
    os.makedirs(os.path.dirname(big))
    with open(big, 'wb') as f:
        f.write(os.urandom(20 * 1024 * 1024))
    os.chown(master.host_path('/var/lib/asterisk/agi-bin/script.agi'), 65534, 65534)
    os.symlink('custom.conf', master.host_path('/etc/asterisk/extensions_extra.d/link.conf'))
    write(slave, '/etc/asterisk/extensions_extra.d/stale.conf', 'old\n')
    write(slave, '/etc/asterisk/pjsip.conf', 'slave only, not a synced directory\n')

    result = master.wazo('wazo-sync')
    assert result.returncode == 0, result.stderr
    # /etc/xivo/asterisk and /root/.config/wazo-auth-cli do not exist; the node's (empty)
    # /var/lib/wazo-auth-keys does
    assert 'synced 5 directories' in result.stdout
    for path in ('/etc/asterisk/extensions_extra.d/custom.conf',
                 '/etc/asterisk/extensions_extra.d/sub/dir/deep.conf',
                 '/var/lib/asterisk/agi-bin/script.agi',
                 '/var/lib/asterisk/moh/défaut/musique-été.wav',
                 '/var/lib/wazo/sounds/tenants/t1/playback/big.wav'):
        with open(master.host_path(path), 'rb') as a, open(slave.host_path(path), 'rb') as b:
            assert a.read() == b.read(), path
        ms, ss = os.stat(master.host_path(path)), os.stat(slave.host_path(path))
        assert (ms.st_mode, ms.st_uid, ms.st_gid) == (ss.st_mode, ss.st_uid, ss.st_gid), path
    assert os.readlink(slave.host_path('/etc/asterisk/extensions_extra.d/link.conf')) == 'custom.conf'
    assert not os.path.exists(slave.host_path('/etc/asterisk/extensions_extra.d/stale.conf'))
    with open(slave.host_path('/etc/asterisk/pjsip.conf')) as f:
        assert f.read() == 'slave only, not a synced directory\n'

    os.unlink(master.host_path('/etc/asterisk/extensions_extra.d/custom.conf'))
    dry = master.wazo('wazo-sync', '--dry-run')
    assert dry.returncode == 0 and 'custom.conf' in dry.stdout
    assert os.path.exists(slave.host_path('/etc/asterisk/extensions_extra.d/custom.conf'))
    assert master.wazo('wazo-sync').returncode == 0
    assert not os.path.exists(slave.host_path('/etc/asterisk/extensions_extra.d/custom.conf'))


def test_without_a_key_sync_is_not_set_up_and_exits_0(nodes):
    master, _ = nodes
    result = master.wazo('wazo-sync')
    assert result.returncode == 0
    assert 'not set up' in result.stdout


def test_a_run_on_the_slave_does_nothing_says_so_and_exits_0(nodes):
    master, slave = nodes
    for args in ([], ['-i'], ['--failback']):
        result = slave.wazo('wazo-sync', *args)
        assert result.returncode == 0, result.stderr
        assert 'not a master' in result.stdout and 'nothing done' in result.stdout
        assert len(result.stdout.splitlines()) == 1 and result.stderr == ''
    assert not os.path.exists(slave.host_path(KEY))
    assert slave.mails() == []


def test_recordings_made_on_the_slave_survive_a_push(nodes):
    """Of the tenants' sounds only acd and playback are pushed (Wazo's xivo-sync since 2019):
    a recording the slave made while it served is never deleted by --delete-after."""
    master, slave = nodes
    assert init(master).returncode == 0
    write(master, '/var/lib/wazo/sounds/tenants/t1/playback/welcome.wav', 'master playback')
    write(master, '/var/lib/wazo/sounds/tenants/t1/acd/queue.wav', 'master acd')
    write(master, '/var/lib/wazo/sounds/tenants/t2/playback/other.wav', 'tenant 2')
    write(slave, '/var/lib/wazo/sounds/tenants/t1/playback/stale.wav', 'deleted on the master')
    recording = '/var/lib/wazo/sounds/tenants/t1/monitor/call-1.wav'
    write(slave, recording, 'recorded on the slave during a failover')
    result = master.wazo('wazo-sync')
    assert result.returncode == 0, result.stderr
    for path in ('/var/lib/wazo/sounds/tenants/t1/playback/welcome.wav',
                 '/var/lib/wazo/sounds/tenants/t1/acd/queue.wav',
                 '/var/lib/wazo/sounds/tenants/t2/playback/other.wav'):
        with open(slave.host_path(path)) as f:
            assert f.read() == open(master.host_path(path)).read(), path
    assert not os.path.exists(slave.host_path('/var/lib/wazo/sounds/tenants/t1/playback/stale.wav'))
    with open(slave.host_path(recording)) as f:
        assert f.read() == 'recorded on the slave during a failover'


def test_sshd_down_is_a_clear_failure_and_mails_root(nodes):
    master, slave = nodes
    assert init(master).returncode == 0
    write(master, '/etc/asterisk/extensions_extra.d/a.conf', 'a\n')
    slave.stop_sshd()
    result = master.wazo('wazo-sync')
    assert result.returncode == 1
    # ssh fails with 255; rsync reports it, or its own 12 when it sees the pipe close first
    assert 'rsync exit status 255' in result.stderr or 'rsync exit status 12' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert 'Slave file synchronisation failed' in master.mails()[0]
    assert 'Connection refused' in open(master.log_file).read()


def test_unreachable_slave(nodes):
    master, slave = nodes
    assert init(master).returncode == 0
    write(master, '/etc/asterisk/extensions_extra.d/a.conf', 'a\n')
    slave.link(up=False)
    result = master.wazo('wazo-sync', timeout=60)
    assert result.returncode == 1
    assert 'rsync exit status 255' in result.stderr or 'rsync exit status 12' in result.stderr
    assert 'timed out' in open(master.log_file).read()


def test_init_with_a_wrong_password_fails_cleanly(nodes):
    master, slave = nodes
    askpass = os.path.join(master.root, 'askpass-wrong')
    with open(askpass, 'w') as f:
        f.write('#!/bin/sh\necho wrong\n')
    os.chmod(askpass, 0o755)
    result = master.wazo('wazo-sync', '-i', env={**master.askpass, 'SSH_ASKPASS': askpass})
    assert result.returncode == 1
    assert 'could not authorise the key' in result.stderr
    assert not os.path.exists(slave.host_path('/root/.ssh/authorized_keys'))


def test_bad_argument(nodes):
    master, _ = nodes
    result = master.wazo('wazo-sync', '--bogus')
    assert result.returncode == 2


def test_failback_copies_voicemail_back_keeps_newer_master_files_deletes_nothing(nodes):
    master, slave = nodes
    assert init(master).returncode == 0
    inbox = '/var/spool/asterisk/voicemail/default/1001/INBOX'
    write(slave, f'{inbox}/msg0000.txt', 'left on the slave\n')
    write(slave, f'{inbox}/msg0000.wav', 'RIFF-slave')
    write(slave, f'{inbox}/msg0001.txt', 'older on the slave\n')
    os.utime(slave.host_path(f'{inbox}/msg0001.txt'), (1_000_000_000, 1_000_000_000))
    write(master, f'{inbox}/msg0001.txt', 'newer on the master\n')
    write(master, f'{inbox}/msg0009.txt', 'only on the master\n')
    result = master.wazo('wazo-sync', '--failback')
    assert result.returncode == 0, result.stderr
    assert f'{inbox}/msg0000.txt' in result.stdout
    with open(master.host_path(f'{inbox}/msg0000.txt')) as f:
        assert f.read() == 'left on the slave\n'
    with open(master.host_path(f'{inbox}/msg0001.txt')) as f:
        assert f.read() == 'newer on the master\n'
    assert os.path.exists(master.host_path(f'{inbox}/msg0009.txt'))
    assert os.path.exists(slave.host_path(f'{inbox}/msg0000.txt')), 'nothing deleted on the slave'
