"""Shared by the package tests: the .deb built once (tests/package/debs.py: `make deb`, through
stdeb); a Wazo node's own packages as stand-ins."""

import configparser
import os
from contextlib import contextmanager

import pytest

import debs
# the package tests' one way to run a command and to digest a file
from debs import file_digest as digest, sh  # noqa: F401
from testbed import REPO
from wazo_ha_common import __version__


def package_version():
    """VERSION-REVISION: wazo_ha_common.__version__ and stdeb.cfg's Debian-Version."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, 'stdeb.cfg'))
    return f"{__version__}-{cfg['wazo-ha']['debian-version']}"


@pytest.fixture(scope='session')
def deb():
    if sh('dpkg-query', '-W', 'wazo-ha').returncode == 0:
        pytest.fail('wazo-ha is already installed on this machine: remove it before the tests')
    path = os.path.join(REPO, 'dist', f'wazo-ha_{package_version()}_all.deb')
    built = os.environ.get(debs.BUILT_ENV)  # make check built it while the suite ran
    rc, log = debs.built_current(built, path) if built else debs.build_current()
    assert rc == 0, log[-6000:]
    assert os.path.exists(path)
    return path, log


XIVO_CONFIG_FILES = ['/usr/sbin/xivo-master-slave-db-replication',
                     '/usr/sbin/xivo-manage-slave-services',
                     '/usr/sbin/xivo-check-master-status']
XIVO_SYNC_FILES = ['/usr/bin/wazo-sync']


def build_stand_in(tmp_path, name, version, files):
    root = tmp_path / f'{name}-{version}'
    (root / 'DEBIAN').mkdir(parents=True)
    (root / 'DEBIAN' / 'control').write_text(
        f'Package: {name}\nVersion: {version}\nArchitecture: all\n'
        'Maintainer: tests <tests@example.org>\nDescription: stand-in owning the HA paths\n')
    # like the real packages, they own more than the diverted commands (a package whose
    # every file is taken over would "disappear" from dpkg's database)
    doc = root / 'usr' / 'share' / 'doc' / name / 'README'
    doc.parent.mkdir(parents=True)
    doc.write_text(f'{name} stand-in\n')
    for path in files:
        target = root / path.lstrip('/')
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f'#!/bin/sh\necho "original {os.path.basename(path)} {version}"\n')
        target.chmod(0o755)
    deb = tmp_path / f'{name}_{version}_all.deb'
    result = sh('dpkg-deb', '--root-owner-group', '--build', str(root), str(deb))
    assert result.returncode == 0, result.stderr
    return str(deb)


def diversions():
    return sh('dpkg-divert', '--list', 'wazo-ha').stdout


@contextmanager
def stand_ins_installed(directory):
    """xivo-config and xivo-sync stand-in packages installed, owning the HA commands as on a
    Wazo node; yields the originals' digests. Purges them, and wazo-ha, at the end."""
    for name in ('xivo-config', 'xivo-sync', 'wazo-ha'):
        if sh('dpkg-query', '-W', name).returncode == 0:
            pytest.fail(f'{name} is installed on this machine: the test would change it')
    config_deb = build_stand_in(directory, 'xivo-config', '1.0', XIVO_CONFIG_FILES)
    sync_deb = build_stand_in(directory, 'xivo-sync', '1.0', XIVO_SYNC_FILES)
    try:
        result = sh('dpkg', '-i', config_deb, sync_deb)
        assert result.returncode == 0, result.stderr
        yield {p: digest(p) for p in XIVO_CONFIG_FILES + XIVO_SYNC_FILES}
    finally:
        sh('dpkg', '--purge', 'wazo-ha')
        sh('dpkg', '--purge', 'xivo-config', 'xivo-sync')


@pytest.fixture
def wazo_node(tmp_path, deb):
    """The stand-ins installed (stand_ins_installed), for one test; yields (our .deb, the
    originals' digests, tmp_path)."""
    with stand_ins_installed(tmp_path) as originals:
        yield deb[0], originals, tmp_path
