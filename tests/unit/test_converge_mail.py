"""A converge that fails under cron mails root once per kind of failure, not every minute."""

import os
import time

from wazo_ha_common import jobs, settings
from wazo_ha_common import converge


def mailing_node(tmp_path):
    """Settings whose sendmail appends each mail to tmp_path/mails, ended by '--- end'."""
    mails = tmp_path / 'mails'
    sendmail = tmp_path / 'sendmail'
    sendmail.write_text(f'#!/bin/sh\ncat >> {mails}\necho "--- end" >> {mails}\n')
    os.chmod(sendmail, 0o755)
    config = tmp_path / 'config.ini'
    config.write_text(f'[paths]\nstate_dir = {tmp_path}\nlog_file = {tmp_path}/log\n'
                      f'[mail]\nsendmail = {sendmail}\n')
    return settings.load(str(config)), mails


def test_a_failing_converge_mails_once_while_it_fails_the_same_way(tmp_path):
    s, mails = mailing_node(tmp_path)
    failed = jobs.LastRun('failed', time.time(), 'psql failed: no', jobs.FAILED, {})
    jobs.save_last_run(str(tmp_path), jobs.CONVERGE, failed)
    assert converge.mail_failure_once(s, 'psql failed: no') is True
    assert converge.mail_failure_once(s, 'psql failed: no') is False
    assert mails.read_text().count('--- end') == 1
    assert 'Subject: HA node access does not follow ha.conf' in mails.read_text()
    assert 'psql failed: no' in mails.read_text()
    assert converge.mail_failure_once(s, 'rsyncd.conf: permission denied') is True
    assert mails.read_text().count('--- end') == 2
    record = jobs.load_last_run(str(tmp_path), jobs.CONVERGE)
    assert (record.result, record.details['mailed']) == ('failed', 'rsyncd.conf')


def test_a_failure_before_any_record_is_mailed_once_too(tmp_path):
    s, mails = mailing_node(tmp_path)
    for _ in range(3):
        converge.mail_failure_once(s, '/etc/xivo/ha.conf: not JSON: node access left as it is')
    assert mails.read_text().count('--- end') == 1
