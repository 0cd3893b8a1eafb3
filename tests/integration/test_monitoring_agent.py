"""wazo-ha-status for a monitoring agent that does not run as root (NRPE as nagios, node
exporter): root writes a summary into [paths] monitoring_dir, group-readable (the package's
group wazo-ha-monitor; here a free group id, set up as postinst does: root:GROUP 2750); a
member of the group reads it, another user gets UNKNOWN (3)."""

import grp
import json
import os
import shutil
import tempfile

import pytest

from check_helpers import check
from prometheus_text import parse
from testbed import BIN_DIR, REPO

NOBODY = 65534


def free_gid():
    for gid in range(61000, 62000):
        try:
            grp.getgrgid(gid)
        except KeyError:
            return gid
    pytest.fail('no free group id')


@pytest.fixture
def agent(nodes):
    """The slave with its monitoring directory made as the package makes it; its state
    directory root's alone (0750), as installed."""
    master, slave = nodes
    gid = free_gid()
    directory = os.path.join(slave.root, 'monitoring')
    os.makedirs(directory)
    os.chown(directory, 0, gid)
    os.chmod(directory, 0o2750)
    os.chmod(slave.state_dir, 0o750)
    assert check(slave).returncode == 0   # the check's decision: master up
    return master, slave, gid


@pytest.fixture(scope='module')
def readable_code(session_dir):
    """wazo-ha-status and its modules where any user can read them, with the modes the package
    installs them with: the checkout may be readable by root alone (a clone under /root, mode
    0700, or made with umask 077)."""
    top = tempfile.mkdtemp(prefix='agent-code-', dir=session_dir)
    try:
        shutil.copytree(os.path.join(REPO, 'wazo_ha_common'), os.path.join(top, 'wazo_ha_common'),
                        ignore=shutil.ignore_patterns('__pycache__'))
        shutil.copy(os.path.join(BIN_DIR, 'wazo-ha-status'), top)
        for folder, _, files in os.walk(top):
            os.chmod(folder, 0o755)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o644)
        yield top
    finally:
        shutil.rmtree(top)


@pytest.fixture
def as_user(readable_code):
    def run(node, *args, groups=None):
        """wazo-ha-status run by uid/gid 65534 (nobody), with `groups` as its supplementary
        groups."""
        who = ['setpriv', f'--reuid={NOBODY}', f'--regid={NOBODY}',
               f'--groups={groups}' if groups is not None else '--clear-groups']
        return node.run(*who, '/usr/bin/python3', os.path.join(readable_code, 'wazo-ha-status'),
                        *args, env={'PYTHONPATH': readable_code})
    return run


def test_a_member_of_the_group_reads_the_summary_another_user_gets_unknown(agent, as_user):
    master, slave, gid = agent
    by_root = slave.wazo('wazo-ha-status')
    assert by_root.returncode in (0, 1), by_root.stdout + by_root.stderr
    summary = os.path.join(slave.root, 'monitoring', 'status.json')
    st = os.stat(summary)
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 0, gid)

    member = as_user(slave, groups=gid)
    assert member.returncode == by_root.returncode, member.stdout + member.stderr
    assert member.stdout.splitlines()[:2] == by_root.stdout.splitlines()[:2]  # level, role
    assert f'peer: {master.ip} (answers ping)' in member.stdout
    assert 'failover decision: master up' in member.stdout
    assert 'slave services: stopped' in member.stdout

    other = as_user(slave)
    assert other.returncode == 3, other.stdout + other.stderr
    assert other.stdout.startswith('wazo-ha status: UNKNOWN: cannot read ')
    assert 'permission denied' in other.stdout and 'wazo-ha-monitor' in other.stdout


def test_the_summary_and_the_metrics_hold_no_secret(agent):
    master, slave, gid = agent
    with open(slave.passfile, 'w') as f:
        f.write('198.18.0.1:5432:asterisk:wazo_ha_stream:pa55-w0rd-never-shown\n')
    assert slave.wazo('wazo-ha-status', '--write-summary').returncode == 0
    text = open(os.path.join(slave.root, 'monitoring', 'status.json')).read()
    assert 'pa55-w0rd' not in text
    assert set(json.loads(text)) == {
        'version', 'written_at', 'status', 'warnings', 'role', 'peer', 'peer_reachable', 'mode',
        'paused', 'decision', 'decision_sentence', 'serving', 'failed_steps', 'replication',
        'sync', 'stream', 'settings_problems', 'peer_record'}


def test_prometheus_text_for_an_agent_and_the_textfile_collector(agent, as_user):
    master, slave, gid = agent
    textfile_dir = os.path.join(slave.root, 'node-exporter')
    os.makedirs(textfile_dir)
    assert slave.wazo('wazo-ha-status', '--write-summary').returncode == 0
    with open(os.path.join(textfile_dir, 'wazo_ha.prom')) as f:
        samples, _, _ = parse(f.read())
    assert samples[('wazo_ha_role', (('role', 'slave'),))] == 1
    assert samples[('wazo_ha_serving', ())] == 0
    member = as_user(slave, '--prometheus', groups=gid)
    assert member.returncode in (0, 1), member.stdout
    samples, _, _ = parse(member.stdout)
    assert samples[('wazo_ha_failover_decision', (('master', 'up'),))] == 1
    assert samples[('wazo_ha_peer_reachable', ())] == 1


def test_a_stale_summary_is_unknown(agent, as_user):
    master, slave, gid = agent
    assert slave.wazo('wazo-ha-status', '--write-summary').returncode == 0
    path = os.path.join(slave.root, 'monitoring', 'status.json')
    with open(path) as f:
        data = json.load(f)
    data['written_at'] -= 600   # cron stopped writing it ten minutes ago
    with open(path, 'w') as f:
        json.dump(data, f)
    stale = as_user(slave, groups=gid)
    assert stale.returncode == 3, stale.stdout
    assert 's ago: is cron running (wazo-ha-status --write-summary' in stale.stdout


def test_an_unexpected_error_as_root_is_unknown_for_nagios(agent):
    """Review of issue 25: NRPE runs the check as root too (sudo): a state the status cannot
    read (here a directory where a state file stands) is UNKNOWN (3) on stdout, not 1."""
    master, slave, gid = agent
    blocker = os.path.join(slave.state_dir, 'converge.json')
    if os.path.exists(blocker):
        os.unlink(blocker)
    os.mkdir(blocker)
    try:
        shown = slave.wazo('wazo-ha-status')
    finally:
        os.rmdir(blocker)
    assert shown.returncode == 3, shown.stdout + shown.stderr
    assert shown.stdout.startswith('wazo-ha status: UNKNOWN: unexpected error: IsADirectoryError')
    assert 'Traceback' in open(slave.log_file).read()
