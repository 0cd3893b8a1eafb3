import os
import shutil
import subprocess
import sys

from wazo_ha_common import schedule


def test_same_minute_and_same_hour():
    assert schedule.same_period(120.5, 179.9, 60)
    assert not schedule.same_period(119.9, 120.1, 60)
    assert schedule.same_period(3600.0, 7199.0, 3600)
    assert not schedule.same_period(None, 10.0, 60)


def test_claim_once_per_period(tmp_path):
    d = str(tmp_path)
    assert schedule.claim(d, 'job', 60, 1000.0)
    assert not schedule.claim(d, 'job', 60, 1010.0), 'second start in the same minute'
    assert schedule.claim(d, 'other-job', 60, 1010.0)
    assert schedule.claim(d, 'job', 60, 1021.0), 'next minute'


def test_claim_survives_a_corrupt_record(tmp_path):
    (tmp_path / 'job.cron-period').write_text('garbage')
    assert schedule.claim(str(tmp_path), 'job', 60, 1000.0)


def test_started_by_cron_looks_at_the_ancestors(tmp_path):
    fake_cron = tmp_path / 'cron'
    shutil.copy('/bin/sh', fake_cron)
    code = 'from wazo_ha_common import schedule; print(schedule.started_by_cron())'
    env = {**os.environ, 'PYTHONPATH': os.getcwd()}
    under_cron = subprocess.run([str(fake_cron), '-c', f'{sys.executable} -c "{code}"'],
                                capture_output=True, text=True, env=env)
    assert under_cron.stdout.strip() == 'True', under_cron.stderr
    by_hand = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env)
    assert by_hand.stdout.strip() == 'False'


def test_paused_since_reads_what_pause_wrote(tmp_path):
    assert schedule.paused_since(str(tmp_path)) is None
    (tmp_path / schedule.PAUSE_FILE).write_text('2026-11-26 09:00:00 +0000 by root\n')
    assert schedule.paused_since(str(tmp_path)) == '2026-11-26 09:00:00 +0000 by root'
    (tmp_path / schedule.PAUSE_FILE).write_text('')
    assert schedule.paused_since(str(tmp_path)) == 'an unknown time'
