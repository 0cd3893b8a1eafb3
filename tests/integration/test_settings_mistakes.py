"""A mistake in /etc/wazo-ha/conf.d: wazo-ha-config check names it, cron-started jobs mail it
once (not every minute, and print nothing for cron to mail), wazo-ha-status shows it as
CRITICAL, and the failover check goes on probing and fails over when the mistake is in a
section it does not read."""

import email
import email.policy
import os
import shutil

from check_helpers import FAST

from testbed import BIN_DIR

SUMMARY = 'wazo-ha-status --write-summary'   # the status's cron line
TYPO = '[sync]\nconect_timeout = 3\n'   # a key misspelt in a section the check does not read


def conf_d(node, name, text):
    directory = os.path.join(os.path.dirname(node.config), 'conf.d')
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, 'w') as f:
        f.write(text)
    return path


def cron_runs(node, tmp_path, times, command='xivo-check-master-status'):
    """Start a command (its cron line's) `times` times as cron does (a copy of sh named cron
    as its parent), one cron minute each (the period claim of the last run is dropped, as a
    new minute would)."""
    fake_cron = os.path.join(str(tmp_path), 'cron')
    shutil.copy('/bin/sh', fake_cron)
    results = []
    for _ in range(times):
        claim = os.path.join(node.state_dir, f'{command.split()[0]}.cron-period')
        if os.path.exists(claim):
            os.unlink(claim)
        results.append(node.run(fake_cron, '-c', f'/usr/bin/python3 {BIN_DIR}/'
                                f'{command} >/dev/null', timeout=120))
    return results


def settings_mails(node):
    """The settings mails, subject and body decoded."""
    out = []
    for text in node.mails():
        mail = email.message_from_string(text, policy=email.policy.default)
        if 'wazo-ha settings error' in mail['Subject']:
            out.append(f"{mail['Subject']}\n{mail.get_content()}")
    return out


def test_check_names_the_mistake_and_exits_2(nodes):
    master, slave = nodes
    clean = slave.wazo('wazo-ha-config', 'check')
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert f'ok: peer: {master.ip} answers ping' in clean.stdout
    assert 'ok: sentinels: is-secondary' in clean.stdout
    assert 'ok: rsync modules' in clean.stdout

    path = conf_d(slave, '50-local.ini', TYPO)
    result = slave.wazo('wazo-ha-config', 'check')
    assert result.returncode == 2, result.stdout + result.stderr
    assert f'BAD INPUT: settings: {path}: [sync] conect_timeout: unknown key' in result.stdout
    # the rest is still checked, one line each
    assert 'ok: ha.conf: slave, remote address 198.18.0.1' in result.stdout
    assert f'ok: peer: {master.ip} answers ping' in result.stdout
    assert result.stderr == ''


def test_check_tells_a_missing_sentinel_and_a_silent_peer(nodes):
    master, slave = nodes
    os.unlink(os.path.join(slave.sentinel_dir, 'is-secondary'))
    master.link(up=False)
    result = slave.wazo('wazo-ha-config', 'check')
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'FAILED: sentinels: none in /var/lib/wazo, a slave node has is-secondary' in result.stdout
    assert f'FAILED: peer: {master.ip} does not answer ping' in result.stdout


def test_a_mistake_in_another_section_is_mailed_once_and_the_check_still_fails_over(nodes, tmp_path):
    master, slave = nodes
    slave.write_settings(check={**FAST['check'], 'run_for': '2'})
    path = conf_d(slave, '50-local.ini', TYPO)
    master.link(up=False)
    runs = cron_runs(slave, tmp_path, 3)
    for ran in runs:
        assert (ran.returncode, ran.stdout, ran.stderr) == (0, '', ''), 'cron would mail output'
    assert slave.services_state() == 'all', 'the check failed over'
    mails = settings_mails(slave)
    assert len(mails) == 1, mails
    assert f'{path}: [sync] conect_timeout: unknown key' in mails[0]
    assert 'wazo-ha-config check' in mails[0]

    status = slave.wazo('wazo-ha-status')
    assert status.returncode == 2, status.stdout + status.stderr
    assert f'CRITICAL: settings: {path}: [sync] conect_timeout: unknown key' in status.stdout


def test_a_mistake_in_the_checks_own_section_stops_it_and_is_mailed_once(nodes, tmp_path):
    master, slave = nodes
    path = conf_d(slave, '50-local.ini', '[check]\ndown_after = 1O\n')
    runs = cron_runs(slave, tmp_path, 3)
    for ran in runs:
        assert (ran.returncode, ran.stdout, ran.stderr) == (2, '', ''), ran
    mails = settings_mails(slave)
    assert len(mails) == 1, mails
    assert f"{path}: [check] down_after: bad value '1O'" in mails[0]
    assert 'does not run until this is corrected' in mails[0]
    assert 'does not run until it is corrected' in open(slave.log_file).read()
    # by hand, the one-line error
    by_hand = slave.wazo('xivo-check-master-status')
    assert by_hand.returncode == 2 and f"{path}: [check] down_after" in by_hand.stderr
    # corrected, then made again: mailed again
    os.unlink(path)
    assert [r.returncode for r in cron_runs(slave, tmp_path, 1)] == [0]
    conf_d(slave, '50-local.ini', '[check]\ndown_after = 1O\n')
    cron_runs(slave, tmp_path, 1)
    assert len(settings_mails(slave)) == 2


def test_a_syntax_error_is_tied_to_its_section_and_the_status_line_mails_it_once(nodes, tmp_path):
    """Review of issue 25: a line without '=' in [sync] stops neither the failover check nor
    the status summary; a key given twice in [paths] stops the summary, whose cron line
    (wazo-ha-status --write-summary, every minute) mails it once and prints nothing."""
    master, slave = nodes
    slave.write_settings(check={**FAST['check'], 'run_for': '2'})
    path = conf_d(slave, '50-local.ini', '[sync]\nconect_timeout 3\n')
    master.link(up=False)
    for ran in cron_runs(slave, tmp_path, 3) + cron_runs(slave, tmp_path, 3, SUMMARY):
        assert (ran.returncode, ran.stdout, ran.stderr) == (0, '', ''), 'cron would mail output'
    assert slave.services_state() == 'all', 'the check failed over'
    mails = settings_mails(slave)
    assert len(mails) == 1, mails
    assert f'{path}: line 2: [sync] not a "key = value" line: conect_timeout 3' in mails[0]

    conf_d(slave, '50-local.ini', '[paths]\nlock_dir = /run/lock/a\nlock_dir = /run/lock/b\n')
    for ran in cron_runs(slave, tmp_path, 3, SUMMARY):
        assert (ran.returncode, ran.stdout, ran.stderr) == (2, '', ''), ran
    mails = settings_mails(slave)
    assert len(mails) == 2, mails
    assert any(f'{path}: line 3: [paths] lock_dir: set twice (keep one)' in m for m in mails)
    by_hand = slave.wazo('wazo-ha-status', '--write-summary')
    assert by_hand.returncode == 2 and 'line 3: [paths] lock_dir' in by_hand.stderr
