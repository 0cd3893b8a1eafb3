"""Shared by the package tests: build the .deb once."""

import os
import subprocess

import pytest

from testbed import REPO


def sh(*argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


@pytest.fixture(scope='session')
def deb():
    if sh('dpkg-query', '-W', 'wazo-ha').returncode == 0:
        pytest.fail('wazo-ha is already installed on this machine: remove it before the tests')
    build = sh('make', '-s', 'deb', cwd=REPO, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    path = os.path.join(REPO, 'dist', 'wazo-ha_0.1.0_all.deb')
    assert os.path.exists(path)
    return path, build.stdout + build.stderr


