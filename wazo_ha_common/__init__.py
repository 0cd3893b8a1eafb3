"""wazo-ha: master/slave high availability for a pair of Wazo servers."""

__version__ = '0.1.0'
