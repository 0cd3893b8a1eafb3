"""The two .debs the package tests install: this tree's (`make deb`, through stdeb) and the
previous release's (commit PREVIOUS, built from a temporary checkout and cached under
build/previous-deb/), for the upgrade test.

Neither build touches the packages installed on the host, so `make check` runs this file in
the background while the rest of the suite runs (`debs.py DIR`: the build's output and exit
status in DIR), then hands DIR to the package tests in BUILT_ENV; without it (pytest run by
hand) the fixtures build here and now."""

import glob
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREVIOUS = 'a9487b7'  # the last commit with hourly as the default
BUILT_ENV = 'WAZO_HA_DEBS_BUILT'


def sh(*argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def build_current() -> tuple[int, str]:
    """`make deb` in this tree: its exit status and output (stdout then stderr)."""
    build = sh('make', '-s', 'deb', cwd=REPO, timeout=600)
    return build.returncode, build.stdout + build.stderr


def built_current(directory: str) -> tuple[int, str]:
    """What `debs.py DIR` recorded of its `make deb` (a missing record: exit status 1)."""
    try:
        with open(os.path.join(directory, 'current.rc')) as f:
            rc = int(f.read())
        with open(os.path.join(directory, 'current.log')) as f:
            return rc, f.read()
    except (OSError, ValueError) as e:
        return 1, f'no record of the .deb built by make check in {directory}: {e}'


def previous_deb() -> str:
    """The .deb of commit PREVIOUS: the cached one, or built from a temporary checkout."""
    cache = os.path.join(REPO, 'build', 'previous-deb', PREVIOUS)
    found = glob.glob(os.path.join(cache, 'wazo-ha_*_all.deb'))
    if found:
        return found[0]
    checkout = tempfile.mkdtemp(prefix='wazo-ha-previous-')
    os.rmdir(checkout)  # git worktree add makes it
    added = sh('git', '-C', REPO, 'worktree', 'add', '--detach', checkout, PREVIOUS)
    assert added.returncode == 0, added.stderr
    try:
        built = sh('make', '-s', 'deb', cwd=checkout, timeout=900)
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        debs = glob.glob(os.path.join(checkout, 'dist', 'wazo-ha_*_all.deb'))
        assert len(debs) == 1, debs
        os.makedirs(cache, exist_ok=True)
        kept = os.path.join(cache, os.path.basename(debs[0]))
        shutil.copy(debs[0], kept + '.part')
        os.rename(kept + '.part', kept)
        return kept
    finally:
        sh('git', '-C', REPO, 'worktree', 'remove', '--force', checkout)


def main(directory: str) -> int:
    os.makedirs(directory, exist_ok=True)
    for name in ('current.rc', 'current.log'):
        if os.path.exists(os.path.join(directory, name)):
            os.unlink(os.path.join(directory, name))
    rc, log = build_current()
    with open(os.path.join(directory, 'current.log'), 'w') as f:
        f.write(log)
    with open(os.path.join(directory, 'current.rc'), 'w') as f:
        f.write(f'{rc}\n')
    try:
        print(f'previous .deb: {previous_deb()}')
    except (AssertionError, OSError, subprocess.SubprocessError) as e:
        # the upgrade test's fixture builds it again and fails with the reason
        print(f'previous .deb not built: {e}', file=sys.stderr)
    return rc


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit(f'usage: {sys.argv[0]} DIR')
    sys.exit(main(sys.argv[1]))
