"""wazo-sync -i, wazo-sync and wazo-sync --failback with a real sshd on the slave node."""

import os
import stat
import subprocess
import time

import pytest

import baselines

PASSWORD = 'slave-root-password'
KEY = '/root/.ssh/xivo_id_rsa'


def configured_with_sshd(master, slave):
    slave.set_root_password(PASSWORD)
    slave.start_sshd()
    master.askpass = master.password_answers(PASSWORD)
    assert slave.wazo('wazo-ha-config', 'set', '--node-type', 'slave',
                      '--remote-address', master.ip).returncode == 0
    assert master.wazo('wazo-ha-config', 'set', '--node-type', 'master',
                       '--remote-address', slave.ip).returncode == 0


@pytest.fixture
def nodes(request):
    """A master without PostgreSQL, a slave with (wazo-sync -i also sets the database role's
    password) and its sshd, both roles set, not paired. Shared: reset to this baseline before
    each test."""
    return baselines.shaped(request, baselines.SYNC, 'sync', configured_with_sshd)


def init(master):
    return master.wazo('wazo-sync', '-i', env=master.askpass, timeout=120)


def paired_with_sshd(master, slave):
    configured_with_sshd(master, slave)
    assert init(master).returncode == 0


@pytest.fixture
def paired(request):
    """As `nodes`, then paired (wazo-sync -i returned 0): for the tests of what follows the
    pairing. Shared: reset to this baseline before each test."""
    return baselines.shaped(request, baselines.SYNC, 'sync-paired', paired_with_sshd)


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
    assert 'created the key' in result.stdout
    assert 'checked: the key can write the synced directories' in result.stdout
    assert 'made a password for the role wazo_ha_replication' in result.stdout
    assert 'accepts wazo_ha_replication with its password, over TLS' in result.stdout
    key = master.host_path(KEY)
    st = os.stat(key)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    lines = authorized_keys(slave)
    assert len(lines) == 1
    assert lines[0].startswith(f'from="{master.ip}",restrict,command="rsync --server --daemon '
                               '--config=/etc/wazo-ha/rsyncd.conf ." ssh-rsa ')
    assert 'host key of the slave' in result.stdout and 'ED25519' in result.stdout
    with open(key, 'rb') as f:
        key_bytes = f.read()
    again = init(master)
    assert again.returncode == 0, again.stderr
    assert 'using the existing key' in again.stdout and 'already authorised' in again.stdout
    assert 'kept the password of the role wazo_ha_replication' in again.stdout
    assert authorized_keys(slave) == lines, 'not added twice'
    with open(key, 'rb') as f:
        assert f.read() == key_bytes, 'not overwritten'


def test_init_replaces_an_unrestricted_line_of_the_same_key(nodes):
    """A node migrated from Wazo's own HA has its key as a plain line (comment XiVO HA)."""
    master, slave = nodes
    os.makedirs(os.path.dirname(master.host_path(KEY)), exist_ok=True)
    master.run('ssh-keygen', '-q', '-t', 'rsa', '-N', '', '-C', 'XiVO HA', '-f', KEY)
    with open(master.host_path(KEY + '.pub')) as f:
        plain = f.read().strip()
    write(slave, '/root/.ssh/authorized_keys', f'ssh-ed25519 AAAAC3NzaOTHER admin@laptop\n{plain}\n',
          0o600)
    result = init(master)
    assert result.returncode == 0, result.stderr
    assert 'replaced 1 earlier line' in result.stdout
    lines = authorized_keys(slave)
    assert lines[0] == 'ssh-ed25519 AAAAC3NzaOTHER admin@laptop', 'other keys kept'
    assert len(lines) == 2 and lines[1].startswith(f'from="{master.ip}",restrict,command=')
    assert plain not in lines


def test_sync_copies_files_and_deletes_what_the_master_deleted(paired):
    master, slave = paired
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
    # stored munged: no root program of the slave can be led anywhere by a link from the master
    assert os.readlink(slave.host_path('/etc/asterisk/extensions_extra.d/link.conf')) == \
        '/rsyncd-munged/custom.conf'
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


def test_recordings_made_on_the_slave_survive_a_push(paired):
    """Of the tenants' sounds only acd and playback are pushed (Wazo's xivo-sync since 2019):
    a recording the slave made while it served is never deleted by --delete-after."""
    master, slave = paired
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


def test_sshd_down_is_a_clear_failure_and_mails_root(paired):
    master, slave = paired
    write(master, '/etc/asterisk/extensions_extra.d/a.conf', 'a\n')
    slave.stop_sshd()
    result = master.wazo('wazo-sync')
    assert result.returncode == 1
    # the first transfer reads the slave's failback record: ssh fails with 255; rsync reports
    # it, or its own 12 (pipe closed) or 5 (no daemon greeting) when it sees that first
    assert any(f'rsync exit status {code}' in result.stderr for code in (255, 12, 5)), result.stderr
    assert 'Connection refused' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert 'Slave file synchronisation failed' in master.mails()[0]
    assert 'Connection refused' in open(master.log_file).read()


def test_unreachable_slave(paired):
    master, slave = paired
    write(master, '/etc/asterisk/extensions_extra.d/a.conf', 'a\n')
    slave.link(up=False)
    result = master.wazo('wazo-sync', timeout=60)
    assert result.returncode == 1
    assert any(f'rsync exit status {code}' in result.stderr for code in (255, 12, 5)), result.stderr
    assert 'timed out' in open(master.log_file).read()


def test_init_with_a_wrong_password_fails_cleanly(nodes):
    master, slave = nodes
    result = master.wazo('wazo-sync', '-i', env=master.password_answers('wrong', 'askpass-wrong'))
    assert result.returncode == 1
    assert 'could not authorise the key' in result.stderr
    assert not os.path.exists(slave.host_path('/root/.ssh/authorized_keys'))


def test_bad_argument(nodes):
    master, _ = nodes
    result = master.wazo('wazo-sync', '--bogus')
    assert result.returncode == 2


VM = '/var/spool/asterisk/voicemail/default/1001'
MESSAGE = """;
; Message Information file
;
[message]
origmailbox=1001
context=default
callerid="{who}" <1002>
origtime={t}
msg_id={t}-{who}
flag=
duration=7
"""


def leave_message(node, folder, number, who, t, formats=('wav', 'WAV', 'gsm')):
    """A message as Asterisk's app_voicemail.c leaves it (leave_voicemail: msgNNNN.txt with
    its [message] section, one sound file per configured format), recorded at t."""
    base = f'{VM}/{folder}/msg{number:04d}'
    write(node, f'{base}.txt', MESSAGE.format(who=who, t=t), mode=0o660)
    for ext in formats:
        write(node, f'{base}.{ext}', f'{ext} sound of {who}', mode=0o660)
    for ext in ('txt',) + tuple(formats):
        os.utime(node.host_path(f'{base}.{ext}'), (t, t))


def mailbox(node):
    """folder -> [(number, who)] from the .txt files, each number's files checked complete."""
    out = {}
    root = node.host_path(VM)
    for folder in sorted(os.listdir(root)):
        path = os.path.join(root, folder)
        if not os.path.isdir(path):
            continue
        names = sorted(os.listdir(path))
        messages = []
        for name in names:
            if name.startswith('msg') and name.endswith('.txt'):
                with open(os.path.join(path, name)) as f:
                    who = f.read().split('callerid="')[1].split('"')[0]
                stem = name[:-4]
                assert {n for n in names if n.startswith(stem + '.')} == {
                    f'{stem}.{e}' for e in ('txt', 'wav', 'WAV', 'gsm')}, (folder, names)
                messages.append((int(stem[3:]), who))
        out[folder] = messages
    return out


def test_failback_by_hand_merges_messages_and_keeps_the_newer_greeting(paired):
    """Messages numbered independently on both nodes are merged, never copied by name; the
    greeting follows the rule of the other failback files (newer wins, the other kept)."""
    master, slave = paired
    leave_message(master, 'INBOX', 0, 'master-a', 1_700_000_000)
    leave_message(master, 'INBOX', 1, 'master-b', 1_700_000_100)
    leave_message(slave, 'INBOX', 0, 'slave-a', 1_700_000_200)  # newer, same name
    write(master, f'{VM}/unavail.wav', 'old greeting')
    os.utime(master.host_path(f'{VM}/unavail.wav'), (1_000_000_000, 1_000_000_000))
    write(slave, f'{VM}/unavail.wav', 'new greeting')
    result = master.wazo('wazo-sync', '--failback')
    assert result.returncode == 0, result.stderr
    assert mailbox(master)['INBOX'] == [(0, 'master-a'), (1, 'master-b'), (2, 'slave-a')]
    with open(master.host_path(f'{VM}/unavail.wav')) as f:
        assert f.read() == 'new greeting'
    kept = [n for n in os.listdir(master.host_path(VM)) if n.startswith('unavail.wav.before-failback-')]
    assert len(kept) == 1
    assert os.path.exists(slave.host_path(f'{VM}/INBOX/msg0000.txt')), 'nothing deleted on the slave'
    again = master.wazo('wazo-sync', '--failback')
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith('0 files'), again.stdout
    assert mailbox(master)['INBOX'] == [(0, 'master-a'), (1, 'master-b'), (2, 'slave-a')]


def test_failback_voicemail_lands_owned_like_its_folder_without_links_nor_set_id_bits(paired):
    master, slave = paired
    leave_message(master, 'INBOX', 0, 'master-a', 1_700_000_000)
    for path in (f'{VM}/INBOX', VM, os.path.dirname(VM)):
        os.chown(master.host_path(path), 4321, 4322)
    leave_message(slave, 'INBOX', 0, 'slave-a', 1_700_000_200)
    os.chmod(slave.host_path(f'{VM}/INBOX/msg0000.wav'), 0o6755)
    os.chmod(slave.host_path(f'{VM}/INBOX/msg0000.gsm'), 0o600)
    os.symlink('/etc', slave.host_path(f'{VM}/Old'))
    os.symlink('/etc/shadow', slave.host_path(f'{VM}/busy.wav'))
    result = master.wazo('wazo-sync', '--failback')
    assert result.returncode == 0, result.stderr
    assert mailbox(master) == {'INBOX': [(0, 'master-a'), (1, 'slave-a')]}
    for ext in ('txt', 'wav', 'WAV', 'gsm'):
        st = os.lstat(master.host_path(f'{VM}/INBOX/msg0001.{ext}'))
        assert (st.st_uid, st.st_gid) == (4321, 4322) and stat.S_ISREG(st.st_mode)
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID | 0o111)
    assert not os.path.lexists(master.host_path(f'{VM}/busy.wav'))
    assert not os.path.lexists(master.host_path(f'{VM}/Old'))


def test_after_failbacks_each_message_comes_back_once_numbered_without_gaps(paired):
    """Issue 24: a real failover and failback by the slave's check; wazo-sync merges the
    slave's messages into the master's folders; a message the master recorded between the
    failback and the sync is kept; a second sync, a run cut short and the next episode add
    nothing; a message deleted on the master after it came back does not return."""
    master, slave = paired
    leave_message(master, 'INBOX', 0, 'master-a', 1_700_000_000)
    leave_message(master, 'INBOX', 1, 'master-b', 1_700_000_100)

    def failover_and_back(while_serving):
        check = ('xivo-check-master-status',)
        slave.write_settings(check={'run_for': '0'})
        assert slave.wazo(*check).returncode == 0
        master.link(up=False)
        slave.write_settings(check={'run_for': '6'})
        assert slave.wazo(*check, timeout=60).returncode == 0
        assert slave.services_state() == 'all', 'failed over'
        while_serving()
        master.link(up=True)
        slave.write_settings(check={'run_for': '7'})
        assert slave.wazo(*check, timeout=60).returncode == 0
        assert slave.services_state() == 'base', 'failed back'

    def first_episode():
        leave_message(slave, 'INBOX', 0, 'slave-a', int(time.time()))  # during the episode
        leave_message(slave, 'Old', 0, 'slave-old', int(time.time()))

    failover_and_back(first_episode)
    leave_message(master, 'INBOX', 2, 'master-between', 1_700_000_400)  # after the failback
    result = master.wazo('wazo-sync')
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('brought back 8 files'), result.stdout
    expected = {'INBOX': [(0, 'master-a'), (1, 'master-b'), (2, 'master-between'),
                          (3, 'slave-a')],
                'Old': [(0, 'slave-old')]}
    assert mailbox(master) == expected

    assert master.wazo('wazo-sync').returncode == 0
    os.unlink(os.path.join(master.state_dir, 'failback.json'))  # as if cut short
    os.unlink(os.path.join(master.state_dir, 'failback-voicemail.json'))
    result = master.wazo('wazo-sync')
    assert result.returncode == 0, result.stderr
    assert mailbox(master) == expected, 'a resumed run adds nothing twice'

    for ext in ('txt', 'wav', 'WAV', 'gsm'):  # listened to and deleted on the master
        os.unlink(master.host_path(f'{VM}/Old/msg0000.{ext}'))
    failover_and_back(lambda: leave_message(slave, 'INBOX', 1, 'slave-second', int(time.time())))
    result = master.wazo('wazo-sync')
    assert result.returncode == 0, result.stderr
    assert mailbox(master) == {'INBOX': expected['INBOX'] + [(4, 'slave-second')], 'Old': []}


def test_attack_a_hostile_slave_chooses_no_owner_link_nor_special_file_on_the_master(paired):
    """The slave offers, in its voicemail: a root-owned 0600 message, a set-uid file, a link to
    /etc, a link to /etc/shadow named like a message, a fifo, and a mailbox the master lacks.
    The master's copies belong to the directory they land in, without set-uid, set-gid or
    sticky bits, and no link, fifo or other special file lands."""
    master, slave = paired
    top = '/var/spool/asterisk/voicemail'
    inbox = f'{top}/default/1001/INBOX'
    asterisk = 4321  # the master's voicemail belongs to its asterisk user
    os.makedirs(master.host_path(inbox))
    for path in (top, f'{top}/default', f'{top}/default/1001', inbox):
        os.chown(master.host_path(path), asterisk, asterisk)
    write(slave, f'{inbox}/msg0000.txt', 'root only\n', mode=0o600)
    write(slave, f'{inbox}/msg0000.wav', 'RIFF-set-uid', mode=0o6755)
    os.chown(slave.host_path(f'{inbox}/msg0000.wav'), 1234, 1234)
    os.symlink('/etc', slave.host_path(f'{inbox}/etc'))
    os.symlink('/etc/shadow', slave.host_path(f'{inbox}/msg0001.txt'))
    os.mkfifo(slave.host_path(f'{inbox}/msg0002.txt'))
    write(slave, f'{top}/default/1002/INBOX/msg0000.txt', 'new mailbox\n', mode=0o640)
    os.chmod(slave.host_path(f'{top}/default/1002'), 0o3775)

    result = master.wazo('wazo-sync', '--failback')

    assert result.returncode == 0, result.stderr
    landed = {}
    for dirpath, dirs, files in os.walk(master.host_path(top)):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            landed[os.path.relpath(path, master.host_path(top))] = os.lstat(path)
    assert sorted(landed) == ['default', 'default/1001', 'default/1001/INBOX',
                              'default/1001/INBOX/msg0000.txt', 'default/1001/INBOX/msg0000.wav',
                              'default/1002', 'default/1002/INBOX',
                              'default/1002/INBOX/msg0000.txt']
    for name, st in landed.items():
        assert (st.st_uid, st.st_gid) == (asterisk, asterisk), name
        assert stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode), name
        assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX), name
    assert stat.S_IMODE(landed['default/1001/INBOX/msg0000.txt'].st_mode) == 0o600
    assert stat.S_IMODE(landed['default/1001/INBOX/msg0000.wav'].st_mode) == 0o644
    with open(master.host_path(f'{inbox}/msg0000.txt')) as f:
        assert f.read() == 'root only\n'
    assert f'{inbox}/msg0000.wav' in result.stdout and 'msg0001' not in result.stdout



def test_attack_escaped_names_a_world_writable_top_and_hard_links_get_no_root_file(paired):
    """The slave offers, in its recordings (the rsync pull, not the voicemail merge), files
    whose names rsync prints escaped (a newline, non-ASCII letters), root's and 0600, a
    world-writable file and a 1777 directory, and makes its recordings directory 1777; the
    master has a hard link (in a directory its asterisk user owns) to a root file outside. On
    the master: every file and directory brought back belongs to the directory it lands in,
    with no world-write nor special bit, the top directory included; the hard link's file keeps
    its owner and mode."""
    master, slave = paired
    top = '/var/spool/asterisk/monitor'
    sub = f'{top}/2026'
    asterisk = 4321
    os.makedirs(master.host_path(sub))
    for path in (top, sub):
        os.chown(master.host_path(path), asterisk, asterisk)
    outside = master.host_path('/var/spool/asterisk/root-only')
    write(master, '/var/spool/asterisk/root-only', 'root only\n', mode=0o600)
    os.link(outside, master.host_path(f'{sub}/linked.wav'))
    newline, accented = 'call\n0000.wav', 'call-\u00e9t\u00e9.wav'
    write(slave, f'{sub}/{newline}', 'a newline\n', mode=0o600)
    write(slave, f'{sub}/{accented}', 'non-ASCII\n', mode=0o600)
    write(slave, f'{sub}/world.wav', 'world-writable\n', mode=0o777)
    write(slave, f'{top}/open/call.wav', 'new directory\n', mode=0o666)
    os.chmod(slave.host_path(f'{top}/open'), 0o1777)
    os.chmod(slave.host_path(top), 0o1777)

    result = master.wazo('wazo-sync', '--failback', env={'LC_ALL': 'C'})

    assert result.returncode == 0, result.stderr
    for name in (newline, accented):
        st = os.lstat(master.host_path(f'{sub}/{name}'))
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (asterisk, asterisk, 0o600)
    st = os.lstat(master.host_path(f'{sub}/world.wav'))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (asterisk, 0o644)
    for path, mode in ((f'{top}/open', 0o755), (f'{top}/open/call.wav', 0o644)):
        st = os.lstat(master.host_path(path))
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (asterisk, asterisk, mode)
    st = os.lstat(master.host_path(top))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (asterisk, 0o755)
    st = os.lstat(outside)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_nlink) == (0, 0, 0o600, 2)


# Attack: what the master's key can do on the slave, tried as a thief of the key would.
# Everything below runs in the master's namespace with the key, and must fail or stay inside
# the synced directories; the slave's own files are compared before and after.

SSH = f'ssh -i {KEY} -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=no ' \
      '-o UserKnownHostsFile=/dev/null'
PUSH = 'push.etc.asterisk.extensions_extra.d'
PULL = 'pull.var.spool.asterisk.voicemail'
ATTACK = '/var/lib/asterisk/attack'  # the thief's files, on the master node only


@pytest.fixture
def thief(paired):
    master, slave = paired
    write(master, f'{ATTACK}/payload', 'ssh-ed25519 AAAAC3NzaTHIEF thief\n* * * * * root id\n')
    marker = f'wazo-ha-attack-{os.getpid()}'
    guarded = ['/root/.ssh/authorized_keys', '/etc/shadow', '/etc/passwd']
    before = {p: slave.run('cat', p).stdout for p in guarded}
    yield master, slave, marker
    try:
        for p in guarded:
            assert slave.run('cat', p).stdout == before[p], f'{p} changed on the slave'
        assert not os.path.exists(f'/etc/cron.d/{marker}'), 'a cron job was planted'
    finally:
        if os.path.exists(f'/etc/cron.d/{marker}'):
            os.unlink(f'/etc/cron.d/{marker}')


def rsync(master, *args):
    return master.run('rsync', '-e', SSH, *args, timeout=60)


def test_attack_the_key_opens_no_shell(thief):
    master, slave, marker = thief
    for command in ('id', f'touch /tmp/{marker}', 'sh -c id', 'cat /etc/shadow'):
        result = master.run(*SSH.split(), f'root@{slave.ip}', command, timeout=30)
        assert 'uid=0' not in result.stdout and 'root:' not in result.stdout
    assert not os.path.exists(f'/tmp/{marker}')


def test_attack_no_file_outside_the_modules_can_be_written(thief):
    master, slave, marker = thief
    # plain remote-shell syntax: the forced command is a daemon, not a server for this
    assert rsync(master, f'{ATTACK}/payload', f'root@{slave.ip}:/root/.ssh/authorized_keys').returncode != 0
    assert rsync(master, f'{ATTACK}/payload', f'root@{slave.ip}:/etc/cron.d/{marker}').returncode != 0
    # daemon syntax with .. out of a module: stays inside it (chroot)
    for dest in ('../../../root/.ssh/authorized_keys', f'../../../etc/cron.d/{marker}',
                 f'/etc/cron.d/{marker}'):
        rsync(master, f'{ATTACK}/payload', f'root@{slave.ip}::{PUSH}/{dest}')
    # into a read-only module, or a module that does not exist
    assert rsync(master, f'{ATTACK}/payload', f'root@{slave.ip}::{PULL}/x').returncode != 0
    assert rsync(master, f'{ATTACK}/payload', f'root@{slave.ip}::root/etc/x').returncode != 0


def test_attack_a_symlink_leads_nowhere_outside(thief):
    master, slave, marker = thief
    # planted on the slave inside a synced directory, pointing out of it
    os.symlink('/etc/cron.d', slave.host_path('/etc/asterisk/extensions_extra.d/planted'))
    rsync(master, f'{ATTACK}/payload', f'root@{slave.ip}::{PUSH}/planted/{marker}')
    # uploaded by the thief, then written through
    master.run('ln', '-s', '/etc/cron.d', f'{ATTACK}/uploaded')
    rsync(master, '-l', f'{ATTACK}/uploaded', f'root@{slave.ip}::{PUSH}/')
    rsync(master, f'{ATTACK}/payload', f'root@{slave.ip}::{PUSH}/uploaded/{marker}')
    # in a pattern module (tenants/*/acd), a symlink is stored munged: it leads nowhere
    master.run('mkdir', '-p', f'{ATTACK}/t/t1')
    master.run('ln', '-s', '../t2/monitor', f'{ATTACK}/t/t1/acd')
    rsync(master, '-rl', f'{ATTACK}/t/', f'root@{slave.ip}::push.var.lib.wazo.sounds.tenants/')
    link = slave.host_path('/var/lib/wazo/sounds/tenants/t1/acd')
    assert not os.path.exists(link) or os.readlink(link).startswith('/rsyncd-munged/')


def test_attack_no_file_outside_the_failback_directories_can_be_read(thief, tmp_path):
    master, slave, _ = thief
    for source in (f'root@{slave.ip}:/etc/shadow', f'root@{slave.ip}::{PULL}/../../../../etc/shadow',
                   f'root@{slave.ip}::{PUSH}/', f'root@{slave.ip}::root/etc/shadow'):
        rsync(master, '-r', source, f'{ATTACK}/stolen/')
    stolen = master.host_path(f'{ATTACK}/stolen')
    found = [os.path.join(d, f) for d, _, fs in os.walk(stolen) for f in fs] if os.path.isdir(stolen) else []
    assert not any('root:' in open(p, errors='replace').read() for p in found), found


def test_attack_no_set_uid_file_device_nor_capability_can_be_planted(thief):
    master, slave, _ = thief
    write(master, f'{ATTACK}/suid', '#!/bin/sh\nid\n', 0o4755)
    os.chmod(master.host_path(f'{ATTACK}/suid'), 0o6755)
    assert rsync(master, '-rlptgo', f'{ATTACK}/suid', f'root@{slave.ip}::{PUSH}/').returncode == 0
    mode = os.stat(slave.host_path('/etc/asterisk/extensions_extra.d/suid')).st_mode
    assert not mode & 0o6000, oct(mode)
    # a file capability (security.capability) would give root to whoever runs the file
    write(master, f'{ATTACK}/capable', '#!/bin/sh\nid\n', 0o755)
    assert rsync(master, '-rX', f'{ATTACK}/capable', f'root@{slave.ip}::{PUSH}/').returncode != 0
    assert rsync(master, '-rA', f'{ATTACK}/capable', f'root@{slave.ip}::{PUSH}/').returncode != 0
    assert not os.path.exists(slave.host_path('/etc/asterisk/extensions_extra.d/capable'))
    master.run('mknod', f'{ATTACK}/disk', 'b', '8', '0')
    result = rsync(master, '-rD', f'{ATTACK}/disk', f'root@{slave.ip}::{PUSH}/')
    assert result.returncode != 0
    assert not os.path.exists(slave.host_path('/etc/asterisk/extensions_extra.d/disk'))


def test_attack_no_port_forwarding(thief):
    master, slave, _ = thief
    result = master.run(*SSH.split(), '-o', 'ExitOnForwardFailure=yes', '-N', '-R',
                        '127.0.0.1:2299:127.0.0.1:22', f'root@{slave.ip}', timeout=30)
    assert result.returncode != 0 and 'forwarding failed' in result.stderr
    tunnel = master.popen(*SSH.split(), '-N', '-L', '127.0.0.1:2298:127.0.0.1:22',
                          f'root@{slave.ip}', stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        probe = master.run('/usr/bin/python3', '-c',
                           'import socket; s = socket.create_connection(("127.0.0.1", 2298), 5); '
                           's.settimeout(5); print(repr(s.recv(64)))', timeout=30)
        assert 'SSH-2.0' not in probe.stdout, 'the tunnel reached the slave'
    finally:
        tunnel.kill()
        tunnel.wait()


def test_the_slave_side_follows_the_settings_and_refuses_the_rest(paired):
    """A directory added to [sync] directories on both nodes is accepted after the slave's
    next converge (cron, every minute: the one writer of its rsync daemon's configuration);
    one the slave's settings do not list is refused."""
    master, slave = paired
    write(master, '/var/lib/asterisk/sounds/custom/hello.wav', 'hello')
    extra = {'sync': {'directories': '/etc/asterisk/extensions_extra.d\n/var/lib/asterisk/sounds/custom',
                      'ssh_key': KEY, 'connect_timeout': '3'}}
    master.write_settings(**extra)
    result = master.wazo('wazo-sync')
    assert result.returncode == 1 and 'var/lib/asterisk/sounds/custom' in result.stderr
    slave.write_settings(**extra)
    assert slave.wazo('wazo-ha-config', 'converge').returncode == 0
    result = master.wazo('wazo-sync')
    assert result.returncode == 0, result.stderr
    with open(slave.host_path('/var/lib/asterisk/sounds/custom/hello.wav')) as f:
        assert f.read() == 'hello'


def test_after_a_failback_the_next_sync_brings_voicemail_back_once_then_pushes(paired):
    """A real failover and failback by the slave's check; then plain wazo-sync runs."""
    master, slave = paired
    check = ('xivo-check-master-status',)
    assert slave.wazo(*check).returncode == 0  # standby
    master.link(up=False)
    slave.write_settings(check={'run_for': '6'})
    assert slave.wazo(*check, timeout=60).returncode == 0
    assert slave.services_state() == 'all', 'failed over'
    inbox = '/var/spool/asterisk/voicemail/default/1001/INBOX'
    write(slave, f'{inbox}/msg0000.txt', 'left on the slave while it served\n')
    write(master, '/etc/asterisk/extensions_extra.d/new.conf', '[new]\n')
    master.link(up=True)

    result = master.wazo('wazo-sync')  # the slave still serves (the master must answer 4 s)
    assert result.returncode == 0, result.stderr
    assert 'serves telephony since' in result.stdout and 'nothing pushed' in result.stdout
    assert not os.path.exists(slave.host_path('/etc/asterisk/extensions_extra.d/new.conf'))
    assert not os.path.exists(master.host_path(f'{inbox}/msg0000.txt'))
    status = master.wazo('wazo-ha-status')
    assert 'slave telephony: SERVING since ' in status.stdout, status.stdout
    assert 'slave decision: master down' in status.stdout

    slave.write_settings(check={'run_for': '7'})
    assert slave.wazo(*check, timeout=60).returncode == 0
    assert slave.services_state() == 'base', 'failed back'
    result = master.wazo('wazo-sync')
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('brought back 1 files'), result.stdout
    assert 'served telephony from' in result.stdout
    with open(master.host_path(f'{inbox}/msg0000.txt')) as f:
        assert f.read() == 'left on the slave while it served\n'
    with open(slave.host_path('/etc/asterisk/extensions_extra.d/new.conf')) as f:
        assert f.read() == '[new]\n', 'pushed after bringing back'

    os.unlink(master.host_path(f'{inbox}/msg0000.txt'))  # listened to and deleted
    result = master.wazo('wazo-sync')
    assert result.returncode == 0, result.stderr
    assert 'brought back' not in result.stdout, 'once per episode'
    assert not os.path.exists(master.host_path(f'{inbox}/msg0000.txt'))
    done = [m for m in master.mails() if 'Subject: Failback done: master ' in m]
    assert len(done) == 1 and 'brought back 1 files' in done[0], master.mails()
    status = master.wazo('wazo-ha-status')
    assert 'slave telephony: stopped, slave decision: master up; it served from ' in status.stdout
    assert 'voicemail and recordings brought back at ' in status.stdout, status.stdout
