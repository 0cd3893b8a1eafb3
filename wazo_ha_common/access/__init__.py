"""Node access: our pg_hba.conf block and conf.d file, the database roles, the pairing."""
