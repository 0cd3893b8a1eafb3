from setuptools import setup

from wazo_ha_common import __version__

setup(
    name='wazo-ha',
    version=__version__,
    description='Master/slave high availability for a pair of Wazo telephony servers',
    license='GPL-3.0-or-later',
    packages=['wazo_ha_common', 'wazo_ha_common.replication'],
    python_requires='>=3.11',
)
