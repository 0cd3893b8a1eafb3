"""The telephony files: wazo-sync (push to the slave, pull back after a failover), the rsync
daemon on the slave and its name converter, the failback record on both nodes."""
