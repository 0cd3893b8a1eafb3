"""The voicemail bring-back's placing on real files (wazo_ha_common.voicemail_back), with the
staged copy made locally instead of by rsync: Asterisk's folder lock, a folder turned into a
link on the master. Asterisk's lock is as apps/app_voicemail.c takes it through
main/app.c ast_lock_path (lockfile mode): a `.lock` hard link in the folder."""

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
