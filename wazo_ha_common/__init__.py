"""wazo-ha: master/slave high availability for a pair of Wazo servers."""

__version__ = '0.2.0'
