"""Node access: who may reach this node's PostgreSQL and files, converged to ha.conf.

pg_files renders and applies our pg_hba.conf blocks and conf.d/wazo-ha.conf (both roles, both
modes, one call); converge brings the whole access of this node in line with ha.conf and the
settings (run every minute on every role, and by wazo-ha-config set); pairing is the
wazo-sync -i protocol, master side and slave side; pg_access and stream_access hold the
replication and stream roles' decisions and SQL."""
