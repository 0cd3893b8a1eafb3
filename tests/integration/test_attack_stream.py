"""A hostile master against the slave in continuous mode (issue 23), on real PostgreSQL 15.18
clusters: nothing it sends runs on the slave with more rights than the tables' owner has.

- From the master's address, as the replication role it logs in with every hour (a member of
  the tables' owner), it puts ENABLE ALWAYS and ENABLE REPLICA triggers on a copied table whose
  function tries to become a superuser and to run a program; rows then come by the stream (the
  apply worker runs as the subscription's owner) and by a hand-off's copy.
- As a superuser of the master, it publishes more than the copied tables: an excluded table,
  and a table named like one of the slave's catalogs (pg_catalog.pg_description, built with
  allow_system_table_mods); the hand-off refuses them."""

import os

import pytest

from datagen import installation_sql
from stream_helpers import (continuous_settings, create_user, our_slots, setup_streaming, stream,
                            stream_ok, subscription, users_named, wait_until)

ROLE = 'wazo_ha_replication'


def slot_dropped(master, slave):
    """The stream stopped and the slave's slot dropped on the master, as the master's fallback
    copy does: the slave's next run hands off afresh (a subscription stopped while its slot
    remains is only enabled again, stream/job.py)."""
    slave.psql("ALTER SUBSCRIPTION wazo_ha DISABLE")
    assert wait_until(lambda: our_slots(master) and
                      all(s.endswith(':false') for s in our_slots(master)), 30), our_slots(master)
    for slot in our_slots(master):
        master.psql(f"SELECT pg_drop_replication_slot('{slot.split(':')[0]}')")
OWNER = 'wazo_ha_subscriber'


@pytest.fixture
def streaming(pair):
    master, slave = pair
    master.psql(installation_sql(users=5))
    setup_streaming(master, slave)
    return master, slave


def as_replication_role(master, slave, sql):
    """psql from the master's namespace to the slave as the replication role, with the
    password the master keeps (what whoever holds the master can do)."""
    return master.run('psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-w',
                      f'host={slave.ip} dbname=asterisk user={ROLE} sslmode=require',
                      '-c', sql, env={'PGPASSFILE': master.passfile, 'PGCONNECT_TIMEOUT': '5'})


def trap_sql(program_target):
    return f"""
CREATE FUNCTION public.wazo_ha_attack() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
  RAISE WARNING 'wazo-ha-attack fired as % (session %, application %)', current_user,
    session_user, current_setting('application_name');
  BEGIN
    ALTER ROLE {ROLE} SUPERUSER;
    RAISE WARNING 'wazo-ha-attack: became a superuser';
  EXCEPTION WHEN others THEN RAISE WARNING 'wazo-ha-attack: superuser refused: %', SQLERRM;
  END;
  BEGIN
    RESET ROLE;
    ALTER ROLE {ROLE} SUPERUSER;
    RAISE WARNING 'wazo-ha-attack: became a superuser after RESET ROLE';
  EXCEPTION WHEN others THEN
    RAISE WARNING 'wazo-ha-attack: superuser after RESET ROLE refused: %', SQLERRM;
  END;
  BEGIN
    COPY (SELECT 1) TO PROGRAM 'touch {program_target}';
    RAISE WARNING 'wazo-ha-attack: program ran';
  EXCEPTION WHEN others THEN RAISE WARNING 'wazo-ha-attack: program refused: %', SQLERRM;
  END;
  RETURN NEW;
END $f$;
CREATE TRIGGER wazo_ha_attack_always BEFORE INSERT OR UPDATE ON public.userfeatures
  FOR EACH ROW EXECUTE FUNCTION public.wazo_ha_attack();
ALTER TABLE public.userfeatures ENABLE ALWAYS TRIGGER wazo_ha_attack_always;
CREATE TRIGGER wazo_ha_attack_replica AFTER INSERT OR UPDATE ON public.userfeatures
  FOR EACH ROW EXECUTE FUNCTION public.wazo_ha_attack();
ALTER TABLE public.userfeatures ENABLE REPLICA TRIGGER wazo_ha_attack_replica;
"""


def attack_lines(slave, since):
    with open(slave.pglog, errors='replace') as f:
        f.seek(since)
        return [line.split('WARNING:', 1)[1].strip() for line in f
                if 'WARNING:' in line and 'wazo-ha-attack' in line]


def rights(slave):
    """What the attack would change: the superusers, what may run programs."""
    return slave.psql("SELECT string_agg(rolname, ' ' ORDER BY rolname) FROM pg_roles WHERE "
                      "rolsuper OR pg_has_role(oid, 'pg_execute_server_program', 'MEMBER')")


def test_triggers_put_by_the_master_run_with_the_tables_owners_rights_only(streaming):
    master, slave = streaming
    before = rights(slave)
    drop_dir = os.path.join(slave.root, 'attack')
    os.mkdir(drop_dir)
    os.chmod(drop_dir, 0o777)  # were a program run, nothing would stop it writing here
    pwned = os.path.join(drop_dir, 'pwned')
    r = as_replication_role(master, slave, trap_sql(pwned))
    assert r.returncode == 0, r.stderr

    # a row by the stream: the apply worker runs as the subscription's owner
    since = os.path.getsize(slave.pglog)
    create_user(master, 'Streamed')
    assert wait_until(lambda: users_named(slave, 'Streamed'), 20)
    lines = attack_lines(slave, since)
    assert any(line.startswith(f'wazo-ha-attack fired as {OWNER} (session {OWNER}')
               for line in lines), lines
    assert not any(' as postgres ' in line for line in lines), lines

    # rows by a hand-off's copy: the master stops the stream, writes, the slave copies afresh
    slot_dropped(master, slave)
    create_user(master, 'Copied')
    since = os.path.getsize(slave.pglog)
    out = stream_ok(slave)
    assert 'hand-off done' in out, out
    assert users_named(slave, 'Copied')
    lines = attack_lines(slave, since)
    assert any(line.startswith(f'wazo-ha-attack fired as {OWNER} (session {OWNER}, '
                               'application wazo-ha-stream)') for line in lines), lines

    lines = attack_lines(slave, 0)
    assert any('superuser refused: must be superuser' in line for line in lines), lines
    assert any('superuser after RESET ROLE refused' in line for line in lines), lines
    assert any('program refused: must be superuser or have privileges of the '
               'pg_execute_server_program role' in line for line in lines), lines
    assert not [line for line in lines if 'became a superuser' in line or 'program ran' in line]
    assert rights(slave) == before
    assert not os.path.exists(pwned)
    assert slave.psql(f"SELECT rolsuper FROM pg_roles WHERE rolname = '{OWNER}'") == 'f'
    assert slave.psql("SELECT subowner::regrole FROM pg_subscription") == OWNER

    # and the stream still applies ordinary rows
    create_user(master, 'Ordinary')
    assert wait_until(lambda: users_named(slave, 'Ordinary'), 20)
    assert subscription(slave) == (True, True)


def slot_of_subscription(slave):
    return slave.psql("SELECT subslotname FROM pg_subscription WHERE subname = 'wazo_ha'")


def test_a_publication_listing_more_than_the_copied_tables_is_refused(streaming):
    master, slave = streaming
    slot = slot_of_subscription(slave)
    master.psql('ALTER PUBLICATION wazo_ha ADD TABLE public.queue_log')  # an excluded table

    for _ in range(2):
        r = stream(slave)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "the master's publication is not exactly the copied tables" in r.stderr
        assert 'it also lists public.queue_log' in r.stderr
    mails = [m for m in slave.mails() if 'publication is not exactly' in m]
    assert len(mails) == 1, slave.mails()
    # the slave keeps what it had: the same subscription, streaming
    assert slot_of_subscription(slave) == slot
    assert slave.psql("SELECT count(*) FROM pg_subscription") == '1'
    create_user(master, 'StillStreamed')
    assert wait_until(lambda: users_named(slave, 'StillStreamed'), 20)


def test_a_table_named_like_a_slave_catalog_is_never_subscribed(streaming):
    """pg_catalog.pg_description on the master made an ordinary table (allow_system_table_mods,
    the real catalog renamed), published, and a row written in it."""
    master, slave = streaming
    slot = slot_of_subscription(slave)
    described = "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM pg_description t"
    before = slave.psql(described)
    master.psql("SET allow_system_table_mods = on; "
                "ALTER TABLE pg_catalog.pg_description RENAME TO pg_description_real; "
                "CREATE TABLE pg_catalog.pg_description (objoid oid, classoid oid, objsubid int, "
                "description text, PRIMARY KEY (objoid, classoid, objsubid)); "
                "ALTER PUBLICATION wazo_ha ADD TABLE pg_catalog.pg_description")
    assert master.psql("SELECT count(*) FROM pg_publication_tables WHERE pubname = 'wazo_ha' "
                       "AND schemaname = 'pg_catalog'") == '1'
    slot_dropped(master, slave)  # as the master can make happen (its fallback copy)
    master.psql("INSERT INTO pg_catalog.pg_description VALUES "
                "('pg_authid'::regclass, 'pg_class'::regclass, 0, 'written by the master')")

    r = stream(slave)

    assert r.returncode == 1, r.stdout + r.stderr
    assert 'it also lists pg_catalog.pg_description' in r.stderr, r.stderr
    assert any('it also lists pg_catalog.pg_description' in m for m in slave.mails())
    assert slave.psql(described) == before
    assert slave.psql("SELECT count(*) FROM pg_subscription_rel r JOIN pg_class c "
                      "ON c.oid = r.srrelid WHERE c.relnamespace <> 'public'::regnamespace") == '0'
    assert slot_of_subscription(slave) == slot


def hijack_sql(program_target):
    """Functions in public shadowing pg_catalog's for the argument types the superuser's
    queries use (ROLE_STATE_SQL's json_build_object, format, count), each one trying to become
    a superuser and to run a program."""
    body = f"""
  RAISE WARNING 'wazo-ha-attack hijack ran as % (session %)', current_user, session_user;
  BEGIN
    ALTER ROLE {ROLE} SUPERUSER;
    RAISE WARNING 'wazo-ha-attack: became a superuser';
  EXCEPTION WHEN others THEN RAISE WARNING 'wazo-ha-attack: superuser refused: %', SQLERRM;
  END;
  BEGIN
    COPY (SELECT 1) TO PROGRAM 'touch {program_target}';
    RAISE WARNING 'wazo-ha-attack: program ran';
  EXCEPTION WHEN others THEN RAISE WARNING 'wazo-ha-attack: program refused: %', SQLERRM;
  END;"""
    return f"""
CREATE FUNCTION public.json_build_object(a text, b json, c text, d json) RETURNS json
LANGUAGE plpgsql AS $f$ BEGIN {body}
  RETURN pg_catalog.json_build_object(a, b, c, d); END $f$;
CREATE FUNCTION public.json_build_object(a text, b boolean, c text, d boolean, e text, f boolean,
  g text, h boolean, i text, j boolean, k text, l boolean, m text, n boolean, o text, p json,
  q text, r boolean, s text, t boolean, u text, v bigint) RETURNS json
LANGUAGE plpgsql AS $f$ BEGIN {body}
  RETURN pg_catalog.json_build_object(a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r, s, t,
                                      u, v); END $f$;
CREATE FUNCTION public.has_parameter_privilege(a oid, b text, c text) RETURNS boolean
LANGUAGE plpgsql AS $f$ BEGIN {body}
  RETURN pg_catalog.has_parameter_privilege(a, b, c); END $f$;
"""


def test_functions_the_master_puts_in_public_never_run_in_a_superusers_session(streaming):
    """The master's replication role (a member of the tables' owner, so it may create in
    public) shadows functions the superuser's statements call unqualified; a hand-off then
    runs them (the role's state, the subscription): with search_path pg_catalog, pg_temp on
    every superuser session (libpq options, psql's first statement) none of them runs."""
    master, slave = streaming
    before = rights(slave)
    drop_dir = os.path.join(slave.root, 'attack')
    os.mkdir(drop_dir)
    os.chmod(drop_dir, 0o777)
    pwned = os.path.join(drop_dir, 'pwned')
    r = as_replication_role(master, slave, hijack_sql(pwned))
    assert r.returncode == 0, r.stderr
    # the functions are there and would win in the default search_path
    assert slave.psql("SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace "
                      "AND proname IN ('json_build_object', 'has_parameter_privilege')") == '3'
    since = os.path.getsize(slave.pglog)
    slot_dropped(master, slave)
    create_user(master, 'Copied')

    out = stream_ok(slave)

    assert 'hand-off done' in out, out
    assert users_named(slave, 'Copied')
    lines = attack_lines(slave, since)
    assert not any('hijack ran' in line for line in lines), lines
    assert not os.path.exists(pwned)
    assert rights(slave) == before
    assert slave.psql(f"SELECT rolsuper FROM pg_roles WHERE rolname = '{ROLE}'") == 'f'


def owner_login(slave):
    """(may log in, has a password) of the subscription's owner role."""
    return slave.psql(f"SELECT rolcanlogin, rolpassword IS NOT NULL FROM pg_authid "
                      f"WHERE rolname = '{OWNER}'")


def worker_pid(slave):
    return slave.psql("SELECT w.pid FROM pg_stat_subscription w JOIN pg_subscription s "
                      "ON s.oid = w.subid WHERE s.subname = 'wazo_ha' AND w.relid IS NULL "
                      "AND w.pid IS NOT NULL")


def test_a_subscription_owned_by_the_superuser_is_given_to_the_owner_role_in_one_run(streaming):
    """As an older version left it (or someone gave it away): the subscription belongs to
    postgres and its apply worker runs as postgres. One run of wazo-ha-stream, without a
    hand-off, gives it to the owner role and starts its worker again: the master's trigger then
    fires without rights."""
    master, slave = streaming
    before = rights(slave)
    slave.psql("ALTER SUBSCRIPTION wazo_ha OWNER TO postgres")
    old = worker_pid(slave)
    slave.psql(f"SELECT pg_terminate_backend({old})")  # the worker starts again as postgres
    assert wait_until(lambda: worker_pid(slave) not in ('', old), 30)
    drop_dir = os.path.join(slave.root, 'attack')
    os.mkdir(drop_dir)
    os.chmod(drop_dir, 0o777)
    pwned = os.path.join(drop_dir, 'pwned')
    assert as_replication_role(master, slave, trap_sql(pwned)).returncode == 0

    out = stream_ok(slave)

    assert 'hand-off' not in out, out
    assert slave.psql("SELECT subowner::regrole FROM pg_subscription") == OWNER
    assert owner_login(slave) == 't|f'
    since = os.path.getsize(slave.pglog)
    create_user(master, 'AfterUpgrade')
    assert wait_until(lambda: users_named(slave, 'AfterUpgrade'), 30)
    lines = attack_lines(slave, since)
    assert any(line.startswith(f'wazo-ha-attack fired as {OWNER} (session {OWNER}')
               for line in lines), lines
    assert not [line for line in lines if ' as postgres ' in line or 'became a superuser' in line
                or 'program ran' in line], lines
    assert not os.path.exists(pwned)
    assert rights(slave) == before


PASSWORD_TRAP = """
CREATE FUNCTION public.wazo_ha_attack_pw() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
  EXECUTE format('ALTER ROLE %I PASSWORD %L', current_user, 'the-attacker-knows-it');
  RAISE WARNING 'wazo-ha-attack password set as %', current_user;
  RETURN NEW;
END $f$;
CREATE TRIGGER wazo_ha_attack_pw BEFORE INSERT ON public.userfeatures
  FOR EACH ROW EXECUTE FUNCTION public.wazo_ha_attack_pw();
ALTER TABLE public.userfeatures ENABLE ALWAYS TRIGGER wazo_ha_attack_pw;
"""


def test_a_password_a_master_trigger_gives_the_owner_role_is_taken_away_and_mailed_once(streaming):
    master, slave = streaming
    assert as_replication_role(master, slave, PASSWORD_TRAP).returncode == 0
    for name in ('Pw1', 'Pw2'):
        since = os.path.getsize(slave.pglog)
        create_user(master, name)
        assert wait_until(lambda: users_named(slave, name), 30)
        assert any(f'password set as {OWNER}' in line for line in attack_lines(slave, since))
        assert owner_login(slave) == 't|t'  # the attack works: the role has a password

        stream_ok(slave)

        assert owner_login(slave) == 't|f'
    mails = [m for m in slave.mails() if f'the role {OWNER} had a password' in m]
    assert len(mails) == 1, slave.mails()
    # still streaming, as the owner role
    create_user(master, 'Pw3')
    assert wait_until(lambda: users_named(slave, 'Pw3'), 30)


def test_a_changed_subscription_connection_is_set_back_and_mailed(streaming):
    """The subscription's owner (so a trigger the apply worker runs) may change its
    connection: the next run sets back the one wazo-ha made, and mails root."""
    master, slave = streaming
    ours = slave.psql("SELECT subconninfo FROM pg_subscription WHERE subname = 'wazo_ha'")
    slave.psql(f"ALTER SUBSCRIPTION wazo_ha CONNECTION '{ours} application_name=elsewhere'")

    stream_ok(slave)

    assert slave.psql("SELECT subconninfo FROM pg_subscription WHERE subname = 'wazo_ha'") == ours
    assert any('connection of the subscription wazo_ha was not the one' in m
               for m in slave.mails()), slave.mails()
    create_user(master, 'Reconnected')
    assert wait_until(lambda: users_named(slave, 'Reconnected'), 30)


@pytest.mark.parametrize('how', ['disabled', 'hourly'])
def test_a_node_that_stops_streaming_leaves_the_owner_role_no_login_nor_password(streaming, how):
    master, slave = streaming
    slave.psql(f"ALTER ROLE {OWNER} PASSWORD 'set-by-a-trigger'")
    if how == 'disabled':
        r = slave.wazo('wazo-ha-config', 'set', '--node-type', 'disabled')
        assert r.returncode == 0, r.stdout + r.stderr
        # no slave any more, no subscription left: the role itself is gone
        assert owner_login(slave) == '', 'dropped, not only locked'
        return
    continuous_settings(slave, database={'mode': 'hourly'})
    stream_ok(slave)
    assert slave.psql("SELECT count(*) FROM pg_subscription") == '0'
    assert owner_login(slave) == 'f|f', 'still a slave (hourly): kept, locked'


def test_a_run_fails_clearly_when_pg_hba_lacks_the_owners_line(streaming):
    """An upgraded slave whose pg_hba.conf an older version wrote (no line for the owner
    role): the run says what to run, and still gives nothing away."""
    master, slave = streaming
    hba = os.path.join(slave.pgdata, 'pg_hba.conf')
    with open(hba) as f:
        text = f.read()
    line = f'local all {OWNER} scram-sha-256'
    assert line in text.splitlines()
    with open(hba, 'w') as f:
        f.write(text.replace(line + '\n', ''))

    r = stream(slave)

    assert r.returncode == 1, r.stdout + r.stderr
    assert f'has no line "{line}"' in r.stderr, r.stderr
    assert 'wazo-ha-config set --node-type slave' in r.stderr
    assert owner_login(slave) == 't|f'
