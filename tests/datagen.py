"""A generated Wazo installation on the real schema: tenant, users with lines, extensions,
voicemails, function keys, groups and their members, plus call logs, CEL and queue logs.

Used by the tests (small sizes), the benchmarks and the demo (large sizes). Pure SQL with
generate_series, so even 2 million rows load in seconds."""

TENANT = '5a6c0c32-1b7d-4c2f-9a57-2b5b8d2a9f01'


def installation_sql(users: int, history: int = 0, groups: int | None = None) -> str:
    """SQL that adds `users` users (and everything around them) and `history` rows of CEL,
    with history/4 call logs and history/4 queue_log rows (the excluded tables)."""
    groups = groups if groups is not None else max(1, users // 20)
    return f"""
SET session_replication_role = replica;
INSERT INTO tenant (uuid, slug) VALUES ('{TENANT}', 'acme') ON CONFLICT DO NOTHING;
INSERT INTO context (tenant_uuid, name, displayname, contexttype)
  SELECT '{TENANT}', 'default', 'Default', 'internal'
  WHERE NOT EXISTS (SELECT 1 FROM context WHERE name = 'default');
CREATE TEMP TABLE gen AS
  SELECT g AS n, nextval('userfeatures_id_seq') AS user_id, nextval('linefeatures_id_seq') AS line_id,
         nextval('func_key_template_id_seq') AS tpl_id, nextval('voicemail_uniqueid_seq') AS vm_id,
         nextval('extensions_id_seq') AS ext_id, nextval('func_key_id_seq') AS fk_id,
         uuid_generate_v4() AS sip_uuid
  FROM generate_series(1, {users}) AS g;
INSERT INTO func_key_template (id, tenant_uuid, name, private)
  SELECT tpl_id, '{TENANT}', NULL, true FROM gen;
INSERT INTO voicemail (uniqueid, context, mailbox, fullname, password)
  SELECT vm_id, 'default', (10000 + vm_id)::text, 'User ' || n, lpad((n % 10000)::text, 4, '0') FROM gen;
INSERT INTO userfeatures (id, uuid, firstname, lastname, email, voicemailid, tenant_uuid,
                          func_key_private_template_id, description)
  SELECT user_id, uuid_generate_v4()::text, 'First' || n, 'Last' || n,
         'user' || user_id || '@example.org', vm_id, '{TENANT}', tpl_id, '' FROM gen;
INSERT INTO endpoint_sip (uuid, name, label, tenant_uuid)
  SELECT sip_uuid, 'line' || line_id, 'line' || line_id, '{TENANT}' FROM gen;
INSERT INTO linefeatures (id, name, context, provisioningid, endpoint_sip_uuid)
  SELECT line_id, 'line' || line_id, 'default', 100000 + line_id, sip_uuid FROM gen;
INSERT INTO user_line (user_id, line_id, main_user, main_line)
  SELECT user_id, line_id, true, true FROM gen;
INSERT INTO extensions (id, context, exten, type, typeval)
  SELECT ext_id, 'default', (10000 + ext_id)::text, 'user', user_id::text FROM gen;
INSERT INTO line_extension (line_id, extension_id, main_extension)
  SELECT line_id, ext_id, true FROM gen;
INSERT INTO func_key (id, type_id, destination_type_id) SELECT fk_id, 1, 1 FROM gen;
INSERT INTO func_key_dest_user (func_key_id, user_id, destination_type_id)
  SELECT fk_id, user_id, 1 FROM gen;
INSERT INTO func_key_mapping (template_id, func_key_id, destination_type_id, position, label, blf)
  SELECT tpl_id, fk_id, 1, 1, 'BLF ' || n, true FROM gen;
CREATE TEMP TABLE gen_groups AS
  SELECT g AS n, nextval('groupfeatures_id_seq') AS group_id FROM generate_series(1, {groups}) AS g;
INSERT INTO groupfeatures (id, tenant_uuid, name, label)
  SELECT group_id, '{TENANT}', 'grp' || group_id, 'Group ' || n FROM gen_groups;
INSERT INTO queuemember (queue_name, interface, usertype, userid, channel, category, position)
  SELECT 'grp' || g.group_id, 'PJSIP/line' || u.line_id, 'user', u.user_id, 'SIP', 'group', 0
  FROM gen u JOIN gen_groups g ON g.n = 1 + (u.n % {groups});
INSERT INTO cel (eventtype, eventtime, userdeftype, cid_name, cid_num, cid_ani, cid_rdnis,
                 cid_dnid, exten, context, channame, appname, appdata, amaflags, accountcode,
                 peeraccount, uniqueid, linkedid, userfield, peer)
  SELECT 'CHAN_START', now() - make_interval(secs => g), '', 'User ' || (g % 997), (10000 + g % 997)::text,
         '', '', '', (10000 + g % 991)::text, 'default', 'PJSIP/line' || (g % 997) || '-0000',
         '', '', 3, '', '', (1700000000 + g)::text || '.' || g, (1700000000 + g)::text, '', ''
  FROM generate_series(1, {history}) AS g;
INSERT INTO call_logd_tenant (uuid) VALUES ('{TENANT}') ON CONFLICT DO NOTHING;
INSERT INTO call_logd_call_log (date, tenant_uuid, source_name, destination_exten)
  SELECT now() - make_interval(secs => g * 4), '{TENANT}', 'User ' || (g % 997), (10000 + g % 991)::text
  FROM generate_series(1, {history // 4}) AS g;
INSERT INTO queue_log (time, callid, queuename, agent, event, data1)
  SELECT now() - make_interval(secs => g * 4), g::text, 'grp1', 'NONE', 'ENTERQUEUE', ''
  FROM generate_series(1, {history // 4}) AS g;
DROP TABLE gen;
DROP TABLE gen_groups;
RESET session_replication_role;
ANALYZE;
"""
