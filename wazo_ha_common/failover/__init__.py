"""The failover on the slave: the check run every minute (check) and the telephony services
it starts and stops (services)."""
