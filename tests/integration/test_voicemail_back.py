"""The voicemail bring-back's placing on real files (wazo_ha_common.voicemail_back), with the
staged copy made locally instead of by rsync: Asterisk's folder lock, a folder turned into a
link on the master. Asterisk's lock is as apps/app_voicemail.c takes it through
main/app.c ast_lock_path (lockfile mode): a `.lock` hard link in the folder."""

import email
import email.policy
import os
import shutil
import threading

import pytest

from wazo_ha_common import settings as settings_module
from wazo_ha_common.files import voicemail_back

TXT = '[message]\norigmailbox=1001\ncallerid="{who}" <1002>\norigtime=1700000000\nmsg_id={who}\n'


def message(root, folder, number, who):
    path = os.path.join(root, 'default', '1001', folder)
    os.makedirs(path, exist_ok=True)
    for ext, body in (('txt', TXT.format(who=who)), ('wav', f'sound of {who}')):
        with open(os.path.join(path, f'msg{number:04d}.{ext}'), 'w') as f:
            f.write(body)


@pytest.fixture
def spools(local, tmp_path):
    slave, spool = str(tmp_path / 'slave-spool'), str(tmp_path / 'files' / 'voicemail')
    message(slave, 'INBOX', 0, 'from-slave')
    message(spool, 'INBOX', 0, 'on-master')
    settings = settings_module.load(local.config)
    fetch = lambda staging: shutil.copytree(slave, staging, dirs_exist_ok=True)  # noqa: E731
    return settings, spool, fetch


def inbox(spool):
    return sorted(os.listdir(os.path.join(spool, 'default', '1001', 'INBOX')))


def test_a_folder_locked_by_asterisk_is_waited_for(spools):
    settings, spool, fetch = spools
    lock = os.path.join(spool, 'default', '1001', 'INBOX', '.lock')
    open(lock, 'w').close()
    threading.Timer(1.0, os.unlink, [lock]).start()
    written = voicemail_back.bring_back(settings, spool, fetch)
    assert len(written) == 2
    assert inbox(spool) == ['msg0000.txt', 'msg0000.wav', 'msg0001.txt', 'msg0001.wav']


def test_a_lock_never_released_fails_the_run_and_the_next_run_brings_the_message_once(spools):
    settings, spool, fetch = spools
    lock = os.path.join(spool, 'default', '1001', 'INBOX', '.lock')
    open(lock, 'w').close()
    with pytest.raises(voicemail_back.VoicemailError, match='could not be brought back'):
        voicemail_back.bring_back(settings, spool, fetch)
    assert inbox(spool) == ['.lock', 'msg0000.txt', 'msg0000.wav'], 'nothing half placed'
    os.unlink(lock)
    for _ in range(2):
        voicemail_back.bring_back(settings, spool, fetch)
        assert inbox(spool) == ['msg0000.txt', 'msg0000.wav', 'msg0001.txt', 'msg0001.wav']


def test_a_folder_that_is_a_link_on_the_master_is_never_written_through(spools, tmp_path):
    settings, spool, fetch = spools
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    folder = os.path.join(spool, 'default', '1001', 'INBOX')
    shutil.rmtree(folder)
    os.symlink(str(elsewhere), folder)
    with pytest.raises(voicemail_back.VoicemailError):
        voicemail_back.bring_back(settings, spool, fetch)
    assert os.listdir(elsewhere) == []
    assert os.path.islink(folder)


def mailbox_dir(root, folder='INBOX'):
    return os.path.join(root, 'default', '1001', folder)


def stamped(root, folder, number, who, origtime):
    path = mailbox_dir(root, folder)
    os.makedirs(path, exist_ok=True)
    text = TXT.replace('origtime=1700000000', f'origtime={origtime}').format(who=who)
    for ext, body in (('txt', text), ('wav', f'sound of {who}')):
        with open(os.path.join(path, f'msg{number:04d}.{ext}'), 'w') as f:
            f.write(body)


def test_only_the_episodes_messages_and_greetings_come_back(local, tmp_path):
    """The slave's whole spool holds messages older than the episode (deleted on the master
    long ago): only those Asterisk stamped from 300 s before the episode's start come back,
    and a greeting only if the slave wrote it during the episode."""
    import time
    slave, spool = str(tmp_path / 'slave'), str(tmp_path / 'spool')
    os.makedirs(spool)
    started = time.time() - 600
    stamped(slave, 'INBOX', 0, 'old', origtime=int(started) - 86400)
    stamped(slave, 'INBOX', 1, 'just-before', origtime=int(started) - 200)
    stamped(slave, 'Old', 0, 'during', origtime=int(started) + 60)
    for name, mtime in (('unavail.wav', started - 3600), ('busy.wav', started + 10)):
        path = os.path.join(slave, 'default', '1001', name)
        with open(path, 'w') as f:
            f.write(name)
        os.utime(path, (mtime, mtime))
    settings = settings_module.load(local.config)
    fetch = lambda staging: shutil.copytree(slave, staging, dirs_exist_ok=True)  # noqa: E731
    voicemail_back.bring_back(settings, spool, fetch, since=started)
    with open(os.path.join(mailbox_dir(spool), 'msg0000.txt')) as f:
        assert 'msg_id=just-before' in f.read()
    assert inbox(spool) == ['msg0000.txt', 'msg0000.wav']
    assert sorted(os.listdir(mailbox_dir(spool, 'Old'))) == ['msg0000.txt', 'msg0000.wav']
    assert sorted(os.listdir(os.path.join(spool, 'default', '1001'))) == ['INBOX', 'Old',
                                                                        'busy.wav']


def test_a_stale_lock_and_temporary_files_of_a_killed_run_are_swept(spools):
    """A run killed while it held the folder's `.lock` (root's) would keep Asterisk from ever
    locking it again, even when no message is left to place there."""
    settings, spool, fetch = spools
    voicemail_back.bring_back(settings, spool, fetch)
    folder = mailbox_dir(spool)
    old = (0, 0)
    for name in ('.lock', voicemail_back.TEMP_PREFIX + 'deadbeef'):
        open(os.path.join(folder, name), 'w').close()
        os.utime(os.path.join(folder, name), old)
    fresh = voicemail_back.TEMP_PREFIX + 'cafe'  # could be a running copy's: kept
    open(os.path.join(folder, fresh), 'w').close()
    voicemail_back.bring_back(settings, spool, fetch)
    assert inbox(spool) == [fresh, 'msg0000.txt', 'msg0000.wav', 'msg0001.txt', 'msg0001.wav']


def test_only_message_files_are_taken_from_a_folder(spools, caplog):
    settings, spool, fetch = spools
    staging_root = os.path.join(os.path.dirname(os.path.dirname(spool)), 'slave-spool')
    for name in ('msg00001.txt', 'msgABCD.txt', 'msg0005.exe', 'notes'):
        with open(os.path.join(mailbox_dir(staging_root), name), 'w') as f:
            f.write('x')
    voicemail_back.bring_back(settings, spool, fetch)
    assert inbox(spool) == ['msg0000.txt', 'msg0000.wav', 'msg0001.txt', 'msg0001.wav']
    assert 'msgABCD.txt on the slave is not a voicemail message' in caplog.text


def test_a_failed_link_leaves_no_half_message_and_the_retry_places_it_once(spools, monkeypatch):
    settings, spool, fetch = spools
    real = os.link

    def link(src, dst, **kw):
        if dst.endswith('.txt') and src.startswith(voicemail_back.TEMP_PREFIX):
            raise OSError(122, 'Disk quota exceeded')
        return real(src, dst, **kw)
    monkeypatch.setattr(os, 'link', link)
    with pytest.raises(voicemail_back.VoicemailError):
        voicemail_back.bring_back(settings, spool, fetch)
    assert inbox(spool) == ['msg0000.txt', 'msg0000.wav'], 'no sound file without its .txt'
    monkeypatch.setattr(os, 'link', real)
    voicemail_back.bring_back(settings, spool, fetch)
    assert inbox(spool) == ['msg0000.txt', 'msg0000.wav', 'msg0001.txt', 'msg0001.wav']


def test_the_record_is_only_added_to(spools, tmp_path):
    """A run that sees an empty slave spool does not forget what came back before: a message
    the user deleted on the master never returns."""
    settings, spool, fetch = spools
    voicemail_back.bring_back(settings, spool, fetch)
    for name in ('msg0001.txt', 'msg0001.wav'):  # the user deletes the message brought back
        os.unlink(os.path.join(mailbox_dir(spool), name))
    empty = tmp_path / 'empty'
    empty.mkdir()
    voicemail_back.bring_back(settings, spool,
                              lambda st: shutil.copytree(empty, st, dirs_exist_ok=True))
    voicemail_back.bring_back(settings, spool, fetch)
    assert inbox(spool) == ['msg0000.txt', 'msg0000.wav']


def test_a_message_beyond_maxmsg_stays_on_the_slave_logged_and_mailed_once(local, spools, caplog):
    """voicemail.conf's maxmsg as Asterisk's app_voicemail.c reads it (load_config: [general]
    maxmsg, a mailbox's `maxmsg=` option): a folder the master already fills keeps the
    slave's message off."""
    settings, spool, fetch = spools
    with open(os.path.join(local.root, 'voicemail.conf'), 'w') as f:
        f.write('[general]\nmaxmsg=100\n[default]\n1001 => 1234,Alice,,,maxmsg=1\n')
    for _ in range(2):
        assert voicemail_back.bring_back(settings, spool, fetch) == []
        assert inbox(spool) == ['msg0000.txt', 'msg0000.wav']
    assert 'left on the slave: the folder is full' in caplog.text
    mails = os.listdir(local.mail_dir)
    assert len(mails) == 1, 'mailed once'
    with open(os.path.join(local.mail_dir, mails[0])) as f:
        # the body as the reader sees it (long lines come quoted-printable)
        body = email.message_from_file(f, policy=email.policy.default).get_content()
    assert 'default/1001/INBOX/msg0000.txt' in body


def test_a_run_killed_between_sound_files_and_txt_is_cleaned_at_the_next_run(spools):
    """The record names the number being linked before linking: the sound file a killed run
    linked without its .txt (never shown by Asterisk, taking the number) is removed."""
    import json
    settings, spool, fetch = spools
    with open(os.path.join(mailbox_dir(spool), 'msg0001.wav'), 'w') as f:
        f.write('sound of from-slave')  # linked, then the run was killed
    os.makedirs(settings.paths.state_dir, exist_ok=True)
    with open(os.path.join(settings.paths.state_dir, voicemail_back.PENDING_FILE), 'w') as f:
        json.dump({'folder': 'default/1001/INBOX', 'number': 1, 'extensions': ['wav', 'txt']}, f)
    voicemail_back.bring_back(settings, spool, fetch)
    assert inbox(spool) == ['msg0000.txt', 'msg0000.wav', 'msg0001.txt', 'msg0001.wav']
    with open(os.path.join(mailbox_dir(spool), 'msg0001.txt')) as f:
        assert 'msg_id=from-slave' in f.read()


def test_a_spool_over_the_staging_cap_stays_on_the_slave_logged_and_mailed_once(local, spools,
                                                                                caplog):
    """[sync] voicemail_stage_max_mb: the size is asked before anything is staged."""
    _, spool, fetch = spools
    local.add_conf_d('cap.ini', '[sync]\nvoicemail_stage_max_mb = 1\n')
    settings = settings_module.load(local.config)
    staged = []

    def fetch_counted(staging):
        staged.append(staging)
        fetch(staging)
    for _ in range(2):
        written = voicemail_back.bring_back(settings, spool, fetch_counted,
                                            size=lambda: 3 * 1048576)
        assert written == [] and staged == [], 'nothing staged, nothing placed'
        assert inbox(spool) == ['msg0000.txt', 'msg0000.wav']
    assert 'over [sync] voicemail_stage_max_mb (1 MB)' in caplog.text
    mails = os.listdir(local.mail_dir)
    assert len(mails) == 1, 'mailed once'
    with open(os.path.join(local.mail_dir, mails[0])) as f:
        mail = email.message_from_file(f, policy=email.policy.default)
    assert mail['Subject'] == voicemail_back.TOO_BIG_SUBJECT
    assert 'raise voicemail_stage_max_mb' in mail.get_content()
    written = voicemail_back.bring_back(settings, spool, fetch_counted, size=lambda: 1000)
    assert len(written) == 2 and len(staged) == 1, 'under the cap: brought back'
    local.add_conf_d('cap.ini', '[sync]\nvoicemail_stage_max_mb = 0\n')
    unbounded = settings_module.load(local.config)
    assert voicemail_back._too_big(unbounded, 10 ** 12, spool) is False, '0: no cap'
