"""A node's telephony as the phones see it: Debian's kamailio as a SIP registrar and proxy,
started and stopped by the `wazo-service` stand-in (testbed.WAZO_SERVICE_BEHAVIOUR).

What it models of a Wazo node's Asterisk (PJSIP):
- REGISTER without authentication; the location table in memory only (Asterisk's contacts
  survive a restart in astdb, but a slave that stops is not asked by any phone meanwhile);
- the expiry bounds of the AORs: minimum, maximum, default (Asterisk's `minimum_expiration`,
  `maximum_expiration`, `default_expiration`; res_pjsip/location.c registers them), which
  wazo-ha-config sets to [sip] min_expiry / max_expiry / default_expiry;
- calls routed to registered users (404 when the user has no contact, as Asterisk's dialplan
  answers a user without a reachable device); `echo` is a service the server answers itself
  (a phone's own call to the server: voicemail, a conference...);
- OPTIONS to the server answered 200 (the SIP probe, as Asterisk's res_pjsip answers them);
- an optional start-up delay: Asterisk needs seconds to load its modules before it answers.

The asterisk stand-in (testbed.ASTERISK_BEHAVIOUR) answers from the contacts this registrar
holds, read with kamcmd through kamailio's control socket: `-rx 'database show
registrar/contact'` lists them as Asterisk keeps registered contacts in astdb; `-rx 'pjsip
show contacts'` lists them and a trunk's permanent contact (an AOR with a fixed `contact=`, as
every Wazo with a SIP trunk has), which never expires.
"""

from __future__ import annotations

import os
import textwrap

MODULES = '/usr/lib/x86_64-linux-gnu/kamailio/modules/'


def config(ip: str, port: int, ctl_socket: str, min_expiry: int, max_expiry: int,
           default_expiry: int) -> str:
    """kamailio.cfg of a node's registrar and proxy."""
    return textwrap.dedent(f'''\
        #!KAMAILIO
        debug=1
        log_stderror=yes
        children=2
        tcp_children=1
        auto_aliases=no
        alias="{ip}:{port}"
        listen=udp:{ip}:{port}
        listen=tcp:{ip}:{port}
        mpath="{MODULES}"
        loadmodule "kex.so"
        loadmodule "tm.so"
        loadmodule "sl.so"
        loadmodule "maxfwd.so"
        loadmodule "siputils.so"
        loadmodule "pv.so"
        loadmodule "textops.so"
        loadmodule "usrloc.so"
        loadmodule "registrar.so"
        loadmodule "ctl.so"
        modparam("ctl", "binrpc", "unix:{ctl_socket}")
        modparam("usrloc", "db_mode", 0)
        # expired contacts go at once, as Asterisk removes each at its expiration
        # (res_pjsip_registrar_expire: a timer per contact)
        modparam("usrloc", "timer_interval", 1)
        modparam("registrar", "min_expires", {min_expiry})
        modparam("registrar", "max_expires", {max_expiry})
        modparam("registrar", "default_expires", {default_expiry})
        # a phone that does not answer is not waited for long
        modparam("tm", "fr_timer", 2000)
        modparam("tm", "fr_inv_timer", 4000)
        request_route {{
            if (!mf_process_maxfwd_header("10")) {{
                sl_send_reply("483", "Too Many Hops");
                exit;
            }}
            if ($rU == "echo") {{
                if (is_method("INVITE|BYE")) {{
                    sl_send_reply("200", "OK");
                }}
                exit;
            }}
            if (is_method("OPTIONS") && $rU == $null) {{
                sl_send_reply("200", "OK");
                exit;
            }}
            if (is_method("REGISTER")) {{
                save("location");
                exit;
            }}
            if (is_method("ACK")) {{
                if (t_check_trans()) {{
                    t_relay();
                }}
                exit;
            }}
            if (is_method("CANCEL")) {{
                if (t_check_trans()) {{
                    t_relay();
                }}
                exit;
            }}
            if (!has_totag() && !lookup("location")) {{
                sl_send_reply("404", "Not Found");
                exit;
            }}
            t_relay();
        }}
        ''')


def control_script(kamailio_cfg: str, base: str, delay_file: str, port: int) -> str:
    """`sip-registrar start|stop|running`, run by the wazo-service stand-in inside the node.
    start: after the delay written in `delay_file` (seconds; none: 0), kamailio in its own
    session, its output in base/kamailio.log, waited for until it listens on `port` (udp and
    tcp: kamailio writes its pid file before it binds; 10 s at most, then said in that log and
    exit 1); stop: the whole session killed at once."""
    pid = os.path.join(base, 'kamailio.pid')
    return textwrap.dedent(f'''\
        #!/bin/sh
        pid={pid}
        running() {{ [ -s $pid ] && kill -0 "$(cat $pid)" 2>/dev/null; }}
        case "$1" in
          start)
            running && exit 0
            delay=$(cat {delay_file} 2>/dev/null || echo 0)
            sleep "$delay"
            rm -f $pid
            setsid -f kamailio -DD -E -m 16 -M 4 -f {kamailio_cfg} -P $pid -Y {base} \\
              </dev/null >>{base}/kamailio.log 2>&1
            i=0
            while [ "$(ss -Hln 'sport = :{port}' | wc -l)" -lt 2 ]; do
              [ $i -lt 200 ] || {{ echo "sip-registrar: not listening on :{port} after 10 s" \
                                   >>{base}/kamailio.log; exit 1; }}
              sleep 0.05; i=$((i + 1))
            done
            ;;
          stop)
            if running; then
              /bin/kill -KILL -- "-$(cat $pid)" 2>/dev/null || /bin/kill -KILL "$(cat $pid)"
            fi
            rm -f $pid
            ;;
          running) running; exit $? ;;
        esac
        exit 0
        ''')


def registered(ul_dump: str) -> list[str]:
    """The AORs of `kamcmd ul.dump brief` (one `AoR: user` line each)."""
    return [line.split(':', 1)[1].strip() for line in ul_dump.splitlines()
            if line.strip().startswith('AoR:')]


def contacts(ul_dump: str) -> list[tuple[str, str]]:
    """(AOR, contact URI) pairs of `kamcmd ul.dump` (full form: `AoR:` then `Address:`)."""
    out, aor = [], None
    for line in ul_dump.splitlines():
        key, _, value = line.strip().partition(':')
        if key == 'AoR':
            aor = value.strip()
        elif key == 'Address' and aor is not None:
            out.append((aor, value.strip()))
    return out


def show_contacts(pairs: list[tuple[str, str]]) -> str:
    """What `asterisk -rx 'pjsip show contacts'` prints for these contacts: the header, the
    separator, one line per contact, as Asterisk's res_pjsip/pjsip_cli.c
    (ast_sip_cli_traverse_objects) and res_pjsip/location.c (cli_contact_print_header,
    cli_contact_print_body) lay them out; "No objects found." when there is none."""
    if not pairs:
        return 'No objects found.\n\n'
    width = 44
    out = ['', '  Contact:  <Aor/ContactUri' + '.' * (width - 15) + '> <Hash....> <Status> '
           '<RTT(ms)..>', ' ' + '=' * 89, '']
    for index, (aor, uri) in enumerate(pairs):
        flex = max(1, width - len(aor))
        out.append(f'  Contact:  {aor}/{uri:<{flex}.{flex}} {index:010x} {"NonQual":<7.7} '
                   f'{float("nan"):11.3f}')
    return '\n'.join(out) + '\n\n'


# a trunk's AOR with a fixed contact: listed by `pjsip show contacts`, never in astdb
TRUNK = ('trunk-operator', 'sip:operator@198.18.0.250:5060')


def database_show(pairs: list[tuple[str, str]]) -> str:
    """What `asterisk -rx 'database show registrar/contact'` prints for these registered
    contacts: Asterisk's main/db.c (handle_cli_database_show: `%-50s: %-25s` per entry, then
    `N results found.`), the entries as res_pjsip/location.c keeps contacts in astdb (family
    registrar, type contact, id `AOR;@HASH`, the object's fields as JSON)."""
    import hashlib
    import json
    out = []
    for aor, uri in pairs:
        digest = hashlib.md5(uri.encode()).hexdigest()
        value = json.dumps({'uri': uri, 'endpoint': aor, 'expiration_time': '0'},
                           separators=(',', ':'))
        out.append(f'{"/registrar/contact/" + aor + ";@" + digest:<50}: {value:<25}')
    return ''.join(line + '\n' for line in out) + f'{len(out)} results found.\n'


def main(argv: list[str]) -> int:
    """`sip_registrar.py show-contacts|database-show CTL_SOCKET PIDFILE [COUNTS_FILE]`: the
    asterisk stand-in's answer to `-rx 'pjsip show contacts'` (with the trunk's contact) or
    `-rx 'database show registrar/contact'` (phones only). With COUNTS_FILE (one number a line, the first is
    used and dropped unless it is the last), that many made-up contacts; else the registrar's
    own; Asterisk's own words and exit 1 when the registrar does not run."""
    import subprocess
    mode, ctl, pidfile, *counts = argv
    if counts and os.path.exists(counts[0]):
        with open(counts[0]) as f:
            lines = f.read().split()
        if len(lines) > 1:
            with open(counts[0], 'w') as f:
                f.write('\n'.join(lines[1:]) + '\n')
        n = int(lines[0]) if lines else 0
        pairs = [(f'phone{i}', f'sip:phone{i}@198.18.0.200:{5100 + i}') for i in range(n)]
    else:
        try:
            with open(pidfile) as f:
                os.kill(int(f.read()), 0)
        except (OSError, ValueError):
            print('Unable to connect to remote asterisk (does /var/run/asterisk/asterisk.ctl '
                  'exist?)')
            return 1
        dump = subprocess.run(['kamcmd', '-s', f'unix:{ctl}', 'ul.dump'], capture_output=True,
                              text=True, check=False).stdout
        pairs = contacts(dump)
    if mode == 'database-show':
        print(database_show(pairs), end='')
    else:
        print(show_contacts([*pairs, TRUNK]), end='')
    return 0


if __name__ == '__main__':
    import sys
    sys.exit(main(sys.argv[1:]))
