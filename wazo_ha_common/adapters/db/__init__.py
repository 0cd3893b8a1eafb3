"""The only SQL helper, one module per job: session (connections, transactions, errors),
catalog (the copy's queries and statements), table_copy (the COPY engine), publishing (the
master's publication), logical (slots and the subscription of continuous mode)."""

# a superuser's session finds functions and operators in pg_catalog only: one that whoever may
# create objects in public (the master's replication role) put there, e.g. a
# public.json_build_object taking the same arguments, would otherwise run as the superuser.
# Here, not in session, so that psql's callers load no psycopg2.
ADMIN_SEARCH_PATH = 'pg_catalog, pg_temp'
ADMIN_OPTIONS = '-c search_path=pg_catalog,pg_temp'            # libpq's options
ADMIN_SQL_PREFIX = f'SET search_path = {ADMIN_SEARCH_PATH};\n'  # psql's first statement
