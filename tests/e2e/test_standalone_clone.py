"""A user clones this repository alone, under /root (mode 0700), and runs the demo.

The copy holds what a clone of the next commit holds (the files git tracks or would track),
in a 0700 directory with nothing beside it (no sibling checkout). psql runs as postgres,
which cannot read such a checkout, so the schema must reach it another way (on stdin)."""

import os
import shutil
import subprocess
import tempfile

from testbed import REPO


def clone_files():
    listed = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
                            cwd=REPO, capture_output=True, check=True).stdout
    return [p for p in listed.decode().split('\0') if p and os.path.isfile(os.path.join(REPO, p))]


def test_a_clone_under_root_runs_the_first_stage_of_the_demo():
    home = tempfile.mkdtemp(prefix='wazo-ha-clone-', dir='/root')
    try:
        os.chmod(home, 0o700)
        clone = os.path.join(home, 'wazo-ha')
        for path in clone_files():
            os.makedirs(os.path.dirname(os.path.join(clone, path)), exist_ok=True)
            shutil.copy2(os.path.join(REPO, path), os.path.join(clone, path))
        assert os.listdir(home) == ['wazo-ha'], 'nothing beside the clone'
        assert subprocess.run(['runuser', '-u', 'postgres', '--', 'test', '-r',
                               os.path.join(clone, 'tests', 'fixtures', 'wazo-asterisk-schema.sql')
                               ]).returncode != 0, 'postgres cannot read the clone'
        result = subprocess.run(['/usr/bin/python3', 'demo/demo.py', '--setup-only', '--users', '50'],
                                cwd=clone, capture_output=True, text=True, timeout=600,
                                env={'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'LANG': 'C.UTF-8'})
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert 'two nodes up' in result.stdout
        assert 'wazo-ha-config: slave' in result.stdout and 'exit 0), master' in result.stdout
        first = [line for line in result.stdout.splitlines() if 'replication, first' in line]
        assert first and 'tables copied' in first[0], result.stdout
    finally:
        shutil.rmtree(home, ignore_errors=True)
