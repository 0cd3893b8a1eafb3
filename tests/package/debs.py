"""The two .debs the package tests install: this tree's (`make deb`, through stdeb) and the
previous release's (commit PREVIOUS, built from a temporary checkout and cached under
build/previous-deb/), for the upgrade test.

Neither build touches the packages installed on the host, so `make check` runs this file in
the background while the rest of the suite runs (`debs.py DIR DEB`: the build's exit status and
output, the digest of the tree it built and of the .deb it made, in DIR/RECORD), then hands DIR
to the package tests in BUILT_ENV. They take that .deb only if the tree and the .deb are still the ones
recorded; without BUILT_ENV (pytest run by hand) the fixtures build here and now. Two builds
never run at once in one tree (a lock in build/)."""

import fcntl
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREVIOUS = 'a9487b7'  # the last commit with hourly as the default
BUILT_ENV = 'WAZO_HA_DEBS_BUILT'
RECORD = 'current.json'


def sh(*argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


@contextmanager
def build_lock():
    """One build at a time in this tree (`make deb` removes what another is making)."""
    os.makedirs(os.path.join(REPO, 'build'), exist_ok=True)
    fd = os.open(os.path.join(REPO, 'build', 'debs.lock'), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def not_packaged() -> tuple[str, ...]:
    """The folders the sdist leaves out (MANIFEST.in's prune lines): no part of the .deb."""
    with open(os.path.join(REPO, 'MANIFEST.in')) as f:
        return tuple(line.split()[1].rstrip('/') + '/' for line in f
                     if len(line.split()) == 2 and line.split()[0] == 'prune')


def tree_digest() -> str:
    """SHA-256 of the files the .deb is made from, as they are now in the working tree (those
    git tracks or would track, outside the folders the sdist prunes)."""
    listed = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
                            cwd=REPO, capture_output=True, check=True).stdout
    pruned = not_packaged()
    digest = hashlib.sha256()
    for path in sorted(p for p in listed.decode().split('\0') if p and not p.startswith(pruned)):
        full = os.path.join(REPO, path)
        digest.update(path.encode() + b'\0')
        if os.path.isfile(full):
            digest.update(file_digest(full).encode())
        digest.update(b'\0')
    return digest.hexdigest()


def file_digest(path: str) -> str:
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def build_current() -> tuple[int, str]:
    """`make deb` in this tree: its exit status and output (stdout then stderr)."""
    with build_lock():
        try:
            build = sh('make', '-s', 'deb', cwd=REPO, timeout=600)
        except subprocess.TimeoutExpired as e:
            return 1, f'make deb took longer than {e.timeout:g} s: stopped'
    return build.returncode, build.stdout + build.stderr


def built_current(directory: str, deb: str) -> tuple[int, str]:
    """What `debs.py DIR` recorded of its `make deb`, if it built this tree's `deb` as it is
    now; otherwise exit status 1 and why."""
    try:
        with open(os.path.join(directory, RECORD)) as f:
            record = json.load(f)
        rc, log, tree, made = record['rc'], record['log'], record['tree'], record['deb']
    except (OSError, ValueError, KeyError, TypeError) as e:
        return 1, (f'no record of a .deb built by make check in {directory} ({e}; its output: '
                   f'{os.path.join(directory, "build.log")})')
    if rc == 0 and tree != tree_digest():
        return 1, f'the tree changed since make check built {deb}: build it again (make deb)'
    if rc == 0 and (not os.path.exists(deb) or file_digest(deb) != made):
        return 1, f'{deb} is not the .deb make check built: build it again (make deb)'
    return rc, log


def previous_deb() -> str:
    """The .deb of commit PREVIOUS: the cached one, or built from a temporary checkout."""
    cache = os.path.join(REPO, 'build', 'previous-deb', PREVIOUS)
    with build_lock():
        found = glob.glob(os.path.join(cache, 'wazo-ha_*_all.deb'))
        if found:
            return found[0]
        parent = tempfile.mkdtemp(prefix='wazo-ha-previous-')  # 0700: nobody else's name
        checkout = os.path.join(parent, 'tree')                 # git worktree add makes it
        try:
            added = sh('git', '-C', REPO, 'worktree', 'add', '--detach', checkout, PREVIOUS)
            assert added.returncode == 0, added.stderr
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
            shutil.rmtree(parent, ignore_errors=True)


def main(directory: str, deb: str) -> int:
    # stopped (make check's recipe ended, Ctrl-C): the temporary checkout is removed on the way
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.makedirs(directory, exist_ok=True)
    record = os.path.join(directory, RECORD)
    if os.path.exists(record):
        os.unlink(record)   # an older run's: never taken for this one's
    tree = tree_digest()
    rc, log = build_current()
    with open(record + '.part', 'w') as f:
        json.dump({'rc': rc, 'log': log, 'tree': tree,
                   'deb': file_digest(deb) if os.path.exists(deb) else None}, f)
    os.replace(record + '.part', record)   # whole or not at all
    try:
        print(f'previous .deb: {previous_deb()}')
    except (AssertionError, OSError, subprocess.SubprocessError) as e:
        # the upgrade test's fixture builds it again and fails with the reason
        print(f'previous .deb not built: {e}', file=sys.stderr)
    return rc


if __name__ == '__main__':
    if len(sys.argv) != 3:
        sys.exit(f'usage: {sys.argv[0]} DIR DEB (the .deb make deb makes)')
    sys.exit(main(sys.argv[1], sys.argv[2]))
