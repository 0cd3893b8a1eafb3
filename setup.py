from setuptools import setup

from wazo_ha_common import __version__

# description and long_description become the Description of the Debian package
# (stdeb: the synopsis is cut at 60 characters, an empty line is a paragraph break)
LONG_DESCRIPTION = """\
Keeps a slave Wazo node a hot copy of its master: the master's asterisk
database is copied to the slave every hour, atomically and incrementally,
and the telephony files are rsynced over SSH. On the slave, a check started
by cron every minute probes the master, starts the telephony services when
it dies and stops them again when it comes back.

Provides xivo-master-slave-db-replication, xivo-manage-slave-services,
xivo-check-master-status, wazo-sync and wazo-ha-config."""

setup(
    name='wazo-ha',
    version=__version__,
    description='master/slave high availability for a pair of Wazo servers',
    long_description=LONG_DESCRIPTION,
    long_description_content_type='text/plain',
    url='https://example.org/wazo-ha',
    license='GPL-3.0-or-later',
    packages=['wazo_ha_common'] + [f'wazo_ha_common.{p}' for p in (
        'access', 'adapters', 'adapters.db', 'decisions', 'failover', 'files', 'replication', 'stream')],
    python_requires='>=3.11',
)
