import os

import pytest

import baselines
from check_helpers import configure_fast_slave
from testbed import (NSDIR_PREFIX, REPO, Testbed, cleanup_leftovers, live_testbeds,
                     session_directory, template_cluster)

_SHARED: list[baselines.SharedBeds] = []
# The longest files, longest first, collected before the others: pytest-xdist (make check's
# --dist loadfile) hands whole files to its workers in collection order, so a long file
# collected late ran alone at the end while the other workers sat idle. The order changes
# nothing else (every file gets shared testbeds of its own worker).
LONGEST_FIRST = (  # (as measured with three workers, on a loaded machine)
    'tests/integration/test_stream.py',
    'tests/integration/test_converge.py',
    'tests/integration/test_check_master_status.py',
    'tests/integration/test_replication.py',
    'tests/integration/test_sync.py',
    'tests/integration/test_phones.py',
    'tests/integration/test_replication_failures.py',
    'tests/e2e/test_cluster_story.py',
    'tests/e2e/test_standalone_clone.py',
)


def pytest_addoption(parser):
    parser.addoption('--fresh-testbeds', action='store_true',
                     help='give every test a testbed of its own (no shared testbed reset '
                          'between tests): slower, to tell a reset from a defect')


def pytest_collection_modifyitems(items):
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    # (a stable sort: within a file, and among the other files, the order stays)
    items.sort(key=lambda item: rank.get(os.path.relpath(str(item.path), REPO),
                                         len(LONGEST_FIRST)))


def pytest_runtest_setup(item):
    # the package tests install the .deb on the host and purge it: dpkg removing
    # /etc/wazo-ha would detach a live node's bind mount, so no shared testbed outlives them
    if os.path.relpath(str(item.path), REPO).startswith(os.path.join('tests', 'package', '')):
        close_shared_testbeds()
        # nor another process's (another pytest-xdist worker, another run): they run alone
        # (this one has none left: a test's own testbed is made by its fixtures, after this)
        live = live_testbeds()
        if live:
            pytest.fail('the package tests install on the host and run alone (make check runs '
                        'them after the suite): testbeds are live: '
                        + ' '.join(f'/run/{NSDIR_PREFIX}{tag}' for tag in sorted(live)),
                        pytrace=False)


def pytest_sessionfinish(session):
    if hasattr(session.config, 'workeroutput'):  # a pytest-xdist worker: to the controller
        session.config.workeroutput['testbeds'] = dict(baselines.STATS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """(pytest-xdist's controller) a worker is done: add up how its tests got their nodes."""
    for key, value in getattr(node, 'workeroutput', {}).get('testbeds', {}).items():
        baselines.STATS[key] += value


def pytest_terminal_summary(terminalreporter):
    """How the tests got their nodes: what the suite's time depends on most."""
    if baselines.STATS['layouts'] or baselines.STATS['fresh']:
        terminalreporter.write_line(
            'testbeds: {layouts} shared (baselines: {baselines}, resets: {resets}), '
            '{fresh} fresh (tests marked fresh_testbed or run with --fresh-testbeds)'.format(
                **baselines.STATS))


def close_shared_testbeds():
    while _SHARED:
        _SHARED.pop().close()


@pytest.fixture(scope='session')
def session_dir(request):
    """The run's directory for testbeds. Its first user removes what an interrupted run left
    (never a testbed whose owner runs, never a live run's directory): a run without testbeds
    (unit tests) touches none."""
    reporter = request.config.pluginmanager.get_plugin('terminalreporter')
    for leftover in cleanup_leftovers():
        if reporter is not None:
            reporter.write_line(f'removed a leftover of an interrupted run: {leftover}')
    with session_directory() as path:
        yield path


@pytest.fixture(scope='session')
def pg_template(session_dir):
    return template_cluster(session_dir)


@pytest.fixture(scope='session')
def shared_beds(session_dir, pg_template):
    """The session's shared testbeds (baselines.SharedBeds), closed at the end of the session
    or before the first package test, whichever comes first."""
    beds = baselines.SharedBeds(session_dir, pg_template)
    _SHARED.append(beds)
    yield beds
    close_shared_testbeds()


@pytest.fixture
def bed(session_dir, pg_template):
    """A testbed of the test's own, closed after it: for the tests marked fresh_testbed."""
    baselines.STATS['fresh'] += 1
    testbed = Testbed(session_dir, pg_template)
    try:
        testbed.start()
        yield testbed
    finally:
        testbed.close()


@pytest.fixture
def pair(request):
    """A master node (198.18.0.1) and a slave node (198.18.0.2), HA not yet configured.
    Shared: the PG layout's testbed reset to its 'bare' baseline (a third node, 'other' at
    198.18.0.3 without PostgreSQL, idles beside them)."""
    master, slave, _ = baselines.shaped(request, baselines.PG, 'bare')
    return master, slave


@pytest.fixture
def nodes(request):
    """A master (198.18.0.1, no PostgreSQL) and a slave configured as such, with fast
    detection settings (check_helpers.FAST). Shared: reset to baseline 'nodes'."""
    return baselines.shaped(request, baselines.NODES, 'nodes', configure_fast_slave)


class LocalNode:
    """This machine as a node without namespaces: every path of the settings in a temp dir."""

    def __init__(self, root):
        self.root = str(root)
        self.config = os.path.join(self.root, 'config.ini')
        self.ha_conf = os.path.join(self.root, 'etc-xivo', 'ha.conf')
        self.sentinel_dir = os.path.join(self.root, 'var-lib-wazo')
        self.log_file = os.path.join(self.root, 'log', 'wazo-ha.log')
        self.mail_dir = os.path.join(self.root, 'mail')
        os.makedirs(self.mail_dir)
        os.makedirs(os.path.join(self.root, 'postgresql'))
        with open(os.path.join(self.root, 'postgresql', 'pg_hba.conf'), 'w') as f:
            f.write('local all postgres peer\n')
        self.sendmail = os.path.join(self.root, 'sendmail')
        with open(self.sendmail, 'w') as f:
            f.write(f'#!/bin/sh\ncat > "$(mktemp -p {self.mail_dir} mail.XXXXXX)"\n')
        os.chmod(self.sendmail, 0o755)
        self.write_settings()

    def write_settings(self, extra=''):
        with open(self.config, 'w') as f:
            f.write(f'''[paths]
ha_conf = {self.ha_conf}
sentinel_dir = {self.sentinel_dir}
state_dir = {self.root}/state
lock_dir = {self.root}/lock
log_file = {self.log_file}
postgresql_conf_dir = {self.root}/postgresql
monitoring_dir = {self.root}/monitoring
prometheus_textfile = {self.root}/node-exporter/wazo_ha.prom
fail2ban_jail = {self.root}/fail2ban/jail.d/wazo-ha.conf
# never the host's own fail2ban (a test that runs one gives its client in conf.d)
fail2ban_client =
[database]
local_dsn = host=/nonexistent dbname=asterisk
admin_psql =
passfile = {self.root}/pgpass
subscription_passfile = {self.root}/subscription.pgpass
reload_command = /bin/true
restart_command = /bin/true
# no cluster here (admin_psql empty): the opt-out, which needs none on a master
mode = hourly
[sync]
ssh_key = {self.root}/ssh/xivo_id_rsa
rsyncd_conf = {self.root}/rsyncd.conf
directories = {self.root}/files/extensions
failback_directories = {self.root}/files/voicemail
record_dir = {self.root}/failback-record
voicemail_conf = {self.root}/voicemail.conf
[mail]
sendmail = {self.sendmail}
[wazo_api]
enabled = false
{extra}''')

    def add_conf_d(self, name, text):
        """A conf.d/*.ini drop-in beside config.ini (read after it: its values win)."""
        os.makedirs(os.path.join(self.root, 'conf.d'), exist_ok=True)
        with open(os.path.join(self.root, 'conf.d', name), 'w') as f:
            f.write(text)

    def run(self, command, *args, input=None, env=None, timeout=120):
        import subprocess
        from testbed import BIN_DIR, REPO
        return subprocess.run(
            ['/usr/bin/python3', os.path.join(BIN_DIR, command), *args], capture_output=True,
            text=True, input=input, timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
            env={'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'PYTHONPATH': REPO,
                 'WAZO_HA_CONFIG': self.config, 'LANG': 'C.UTF-8', **(env or {})})

    def snapshot(self):
        """Every file under the node's ha.conf and sentinel dirs with its content."""
        found = {}
        for top in (os.path.dirname(self.ha_conf), self.sentinel_dir):
            for dirpath, _, files in os.walk(top):
                for name in files:
                    path = os.path.join(dirpath, name)
                    with open(path, 'rb') as f:
                        found[path] = f.read()
        return found


@pytest.fixture
def local(tmp_path):
    return LocalNode(tmp_path)
