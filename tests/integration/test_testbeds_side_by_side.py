"""Two testbeds at once never touch the host: their nodes write only their own directories,
even while one of them closes (a testbed that removed a host mount point such as
/etc/wazo-ha on close detached that bind mount in the other's nodes, which then wrote the
host's real /etc/wazo-ha/rsyncd.conf and /var/spool/asterisk). And the harness's own rules
for runs side by side: a testbed's names are its own, a run removes only what killed runs
left, a unit-test run removes nothing."""

import contextlib
import os
import shutil
import stat
import subprocess
import threading

import pytest

from replication_helpers import configure
import testbed
from testbed import NODE_DIRS, REPO, sh

SYNCED = '/etc/asterisk/extensions_extra.d'


def host_files():
    """Every entry but directories under the host's own node directories (/etc/wazo-ha,
    /etc/asterisk, /var/spool/asterisk, /var/lib/wazo...) with its type, mode, owner, size,
    inode and modification time: any write changes one of them. Directories are left out:
    the testbeds create the missing ones as mount points and the last one removes them."""
    found = {}
    for top in NODE_DIRS:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in filenames + [d for d in dirnames
                                     if os.path.islink(os.path.join(dirpath, d))]:
                st = os.lstat(os.path.join(dirpath, name))
                found[os.path.join(dirpath, name)] = (
                    stat.S_IFMT(st.st_mode), st.st_mode, st.st_uid, st.st_size, st.st_ino,
                    st.st_mtime_ns)
    return found


def own_mounts(node):
    """The node's bind mounts of its own directories, as its mount namespace holds them."""
    info = sh(*node.nsenter(['cat', '/proc/self/mountinfo'])).stdout.splitlines()
    return sorted((line.split()[3], line.split()[4]) for line in info
                  if line.split()[4] in NODE_DIRS)


def paired_testbed(session_dir, pg_template):
    """A master without PostgreSQL and a slave with, configured (the slave writes its rsync
    daemon's configuration in /etc/wazo-ha) and paired over the slave's sshd."""
    bed = testbed.Testbed(session_dir, pg_template)
    try:
        bed.start()
        master = bed.add_node('master', 1, with_postgres=False)
        slave = bed.add_node('slave', 2)
        configure(master, slave)
        return bed, master, slave
    except BaseException:
        bed.close()
        raise


def write_and_sync(master, slave, name):
    """A file written on the master, pushed by wazo-sync, and a check run on the slave (it
    keeps the rsync daemon's configuration and its state files up to date)."""
    os.makedirs(master.host_path(SYNCED), exist_ok=True)
    with open(master.host_path(f'{SYNCED}/{name}'), 'w') as f:
        f.write(f'[{name}]\n')
    result = master.wazo('wazo-sync')
    assert result.returncode == 0, result.stderr
    result = slave.wazo('xivo-check-master-status')
    assert result.returncode == 0, result.stderr
    with open(slave.host_path(f'{SYNCED}/{name}')) as f:
        assert f.read() == f'[{name}]\n', 'pushed into the slave node\'s own directory'


@pytest.mark.fresh_testbed('two testbeds of its own, one closed while the other runs')
def test_two_testbeds_side_by_side_never_touch_the_host(session_dir, pg_template):
    before = host_files()
    beds = []
    try:
        beds.append(paired_testbed(session_dir, pg_template))
        beds.append(paired_testbed(session_dir, pg_template))
        for n, (_, master, slave) in enumerate(beds):
            write_and_sync(master, slave, f'bed{n}.conf')
            assert os.path.exists(slave.host_path('/etc/wazo-ha/rsyncd.conf'))
        assert host_files() == before, 'a node wrote into the host'

        first, (_, master, slave) = beds[0][0], beds[1]
        mounts = {node.name: own_mounts(node) for node in (master, slave)}
        assert all(len(m) == len(NODE_DIRS) for m in mounts.values()), mounts
        errors = []

        def keep_writing():
            try:
                for n in range(3):
                    write_and_sync(master, slave, f'while-closing-{n}.conf')
            except BaseException as e:  # reported by the test's thread
                errors.append(e)

        writer = threading.Thread(target=keep_writing)
        writer.start()
        try:
            first.close()
            beds.pop(0)
        finally:
            writer.join(timeout=300)
        assert not writer.is_alive() and errors == [], errors
        write_and_sync(master, slave, 'after-close.conf')
        assert {node.name: own_mounts(node) for node in (master, slave)} == mounts, \
            'the closed testbed detached a bind mount of the other'
        assert host_files() == before, 'a node wrote into the host'
    finally:
        for bed, _, _ in beds:
            bed.close()
    assert host_files() == before


RECORDER = '''
import os
import testbed


def record():
    with open(os.environ['CLEANUP_RECORD'], 'a') as f:
        f.write('cleanup_leftovers\\n')
    return []


testbed.cleanup_leftovers = record  # imported (-p) before conftest, which imports it
'''


def run_pytest(tmp_path, *args):
    """pytest in a child, with a plugin that records (instead of doing) cleanup_leftovers."""
    (tmp_path / 'record_cleanup.py').write_text(RECORDER)
    record = tmp_path / 'cleanups'
    result = subprocess.run(
        ['/usr/bin/python3', '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
         '-p', 'record_cleanup', *args], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, 'PYTHONPATH': f'{tmp_path}:{REPO}/tests:{REPO}',
             'CLEANUP_RECORD': str(record)})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return record.read_text().splitlines() if record.exists() else []


def test_a_unit_test_run_never_cleans_up_testbeds(tmp_path):
    """Only a run that builds a testbed removes leftovers of interrupted runs: a unit-test run
    beside an integration run touches none of its testbeds, not even one that is starting."""
    assert run_pytest(tmp_path, 'tests/unit/test_schedule.py') == []
    # the recorder sees a run that does build testbeds (here: asks for their directory)
    probe = tmp_path / 'test_probe.py'
    probe.write_text('def test_asks_for_the_testbeds_directory(session_dir):\n'
                     '    assert session_dir\n')
    assert run_pytest(tmp_path, '-p', 'conftest', '--rootdir', str(tmp_path),
                      str(probe)) == ['cleanup_leftovers']


def test_a_tag_drawn_twice_never_tears_down_the_testbed_holding_it(session_dir, monkeypatch):
    """Two testbeds that draw the same tag: the second draws again, and one that finds no free
    tag fails without removing anything of the first (CI once lost the story's network so: a
    second testbed's start stopped on the first's /run directory and its close deleted the
    first's hub namespace)."""
    def hub_alive(bed):
        names = [line.split()[0] for line in sh('ip', 'netns', 'list').stdout.splitlines()]
        return bed.hub in names and os.path.isdir(bed.nsdir)

    first = testbed.Testbed(session_dir, None)
    beds = [first]
    try:
        first.start()
        held = first.tag[1:]
        draws = iter([held, held])
        real = testbed.secrets.token_hex
        monkeypatch.setattr(testbed.secrets, 'token_hex', lambda n: next(draws, None) or real(n))
        second = testbed.Testbed(session_dir, None)
        beds.append(second)
        second.start()
        assert second.tag != first.tag and hub_alive(second)
        assert next(draws, None) is None, 'the held tag was drawn twice, then another'

        monkeypatch.setattr(testbed.secrets, 'token_hex', lambda n: held)
        third = testbed.Testbed(session_dir, None)
        beds.append(third)
        with pytest.raises(RuntimeError, match='no free testbed tag'):
            third.start()
        third.close()
        assert hub_alive(first), 'a testbed that never started removed the first one'
        assert not os.path.exists(third.workdir)
    finally:
        monkeypatch.undo()
        for bed in reversed(beds):
            bed.close()


def test_the_directory_of_a_killed_run_is_swept_and_no_other(tmp_path, monkeypatch):
    """A run's directory is locked by its pytest process: a later run removes it once that
    process is gone (killed runs left them in /tmp for good), never while it lives, never one
    with a mount under it, never through a link."""
    top = tmp_path / 'tmp'
    top.mkdir()
    monkeypatch.setattr(testbed.tempfile, 'tempdir', str(top))
    dirs = {n: top / f'{testbed.SESSION_PREFIX}{n}' for n in ('killed', 'live', 'mounted')}
    for d in dirs.values():
        d.mkdir()
        (d / 'node').mkdir()
        (d / 'node' / 'file').write_text('x')
    elsewhere = tmp_path / 'elsewhere'   # a directory nobody holds, behind a link
    elsewhere.mkdir()
    (elsewhere / 'kept').write_text('x')
    (top / f'{testbed.SESSION_PREFIX}link').symlink_to(elsewhere)
    sh('mount', '-t', 'tmpfs', 'tmpfs', str(dirs['mounted'] / 'node'))
    try:
        with testbed.flock_held(dirs['live']), testbed._registry_lock():
            assert testbed._sweep_session_dirs() == [str(dirs['killed'])]
        assert not dirs['killed'].exists()
        assert (dirs['live'] / 'node' / 'file').exists(), 'its run goes on'
        assert dirs['mounted'].exists() and (elsewhere / 'kept').exists()
    finally:
        sh('umount', str(dirs['mounted'] / 'node'), check=False)
    # its holder gone (flock's child may end a moment later) and the mount, the two others go
    assert testbed.wait_until(lambda: testbed._owner_alive(str(dirs['live'])) is False, 10)
    with testbed._registry_lock():
        assert sorted(testbed._sweep_session_dirs()) == [str(dirs['live']),
                                                         str(dirs['mounted'])]
    # and the directory a run gets is locked while the run lasts, removed with it
    with testbed.session_directory() as mine:
        with testbed._registry_lock():
            assert testbed._sweep_session_dirs() == []
    assert not os.path.exists(mine)


def test_a_testbed_is_alive_while_its_owner_holds_its_lock():
    """Liveness is the owner's lock on the testbed's /run directory (not a process number,
    which wraps): a directory nobody holds is a leftover, one held is alive, and the package
    tests' guard (live_testbeds) sees it. Made under the registry lock, as start() makes a
    testbed's, so that another run's cleanup never finds them half made."""
    dead, held = (os.path.join('/run', f'{testbed.NSDIR_PREFIX}wzz{n}') for n in ('dead', 'held'))
    holding = contextlib.ExitStack()
    try:
        with testbed._registry_lock():
            for path in (dead, held):
                os.mkdir(path, 0o711)
            holding.enter_context(testbed.flock_held(held))
            live = testbed._live_testbeds()
        with holding:
            assert 'wzzheld' in live and 'wzzdead' not in live, live
            live = testbed.live_testbeds()   # (the dead one may be swept meanwhile)
            assert 'wzzheld' in live and 'wzzdead' not in live, live
    finally:
        holding.close()
        for path in (dead, held):
            shutil.rmtree(path, ignore_errors=True)
