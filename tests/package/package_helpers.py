"""Shared by the package tests: build the .deb once (with `make deb`, through stdeb)."""

import configparser
import os
import subprocess

import pytest

from testbed import REPO
from wazo_ha_common import __version__


def sh(*argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def package_version():
    """VERSION-REVISION: wazo_ha_common.__version__ and stdeb.cfg's Debian-Version."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, 'stdeb.cfg'))
    return f"{__version__}-{cfg['wazo-ha']['debian-version']}"


@pytest.fixture(scope='session')
def deb():
    if sh('dpkg-query', '-W', 'wazo-ha').returncode == 0:
        pytest.fail('wazo-ha is already installed on this machine: remove it before the tests')
    build = sh('make', '-s', 'deb', cwd=REPO, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    path = os.path.join(REPO, 'dist', f'wazo-ha_{package_version()}_all.deb')
    assert os.path.exists(path)
    return path, build.stdout + build.stderr
