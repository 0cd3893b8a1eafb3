"""What a run of wazo-ha-stream does, decided from facts alone (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

# the names of continuous mode: the master publishes PUBLICATION, the slave subscribes
# (SUBSCRIPTION) on a slot of its own on the master named SLOT_PREFIX + the hand-off's time
PUBLICATION = 'wazo_ha'
SUBSCRIPTION = 'wazo_ha'
# a hand-off's new subscription, disabled until the copy's commit makes it SUBSCRIPTION
PENDING = 'wazo_ha_pending'
SLOT_PREFIX = 'wazo_ha_slot_'
LAG_WAIT = 20.0     # seconds a run waits for the slave to catch up (the lag probe's limit)

NOTHING = 'nothing'      # the stream is healthy (or off while the slave serves): measure, record
DISABLE = 'disable'      # stop applying: the slave serves, or the schemas differ
HAND_OFF = 'hand-off'    # the atomic copy and a fresh subscription
DROP = 'drop'            # not in continuous mode: remove the subscription left behind
ENABLE = 'enable'        # a subscription disabled on an error, its slot kept: enabled again

# who disabled the subscription (recorded when we do it); any other disabled subscription was
# disabled by PostgreSQL itself on an apply error (disable_on_error)
BY_FAILOVER = 'failover'
BY_PAUSE = 'pause'
BY_SCHEMA = 'schema'
PLANNED_STOPS = {BY_FAILOVER: 'failback: the master is back',
                 BY_PAUSE: 'resumed after a pause',
                 BY_SCHEMA: 'the schemas are equal again'}


@dataclass(frozen=True)
class Facts:
    continuous: bool
    serving: bool                 # the slave's telephony runs: it took over
    subscription: dict | None     # logical.subscription() on the slave
    slot: dict | None             # logical.slots() entry of the subscription's slot on the master
    schema_differences: tuple[str, ...] = ()
    disabled_by: str | None = None
    request: str | None = None    # a hand-off asked for (resume, by hand)
    handed_off_before: bool = False
    tables_changed: bool = False  # the publication's tables are not the subscription's
    # re_enabled(slot, applied) of the last time a run enabled a subscription disabled on an
    # error (the master's commit position of the last transaction the slave applied); None if
    # never
    re_enabled: str | None = None


@dataclass(frozen=True)
class Action:
    kind: str
    reason: str
    planned: bool = True     # False: something broke; the hand-off is mailed to root


def decide(f: Facts) -> Action:
    sub = f.subscription
    if not f.continuous:
        if sub is None:
            return Action(NOTHING, '[database] mode is hourly: no stream')
        return Action(DROP, '[database] mode is hourly: the subscription left behind is dropped')
    if f.serving:
        if sub is not None and sub['enabled']:
            return Action(DISABLE, 'the slave serves (failover): the stream stays off until '
                                   'the master is back')
        return Action(NOTHING, 'the slave serves (failover): the stream stays off until the '
                               'master is back')
    if f.schema_differences:
        return Action(DISABLE if sub is not None and sub['enabled'] else NOTHING,
                      'the schemas differ: ' + '; '.join(f.schema_differences), planned=False)
    if f.request:
        return Action(HAND_OFF, f.request)
    if sub is None:
        if f.handed_off_before:
            return Action(HAND_OFF, 'the subscription is gone from the slave', planned=False)
        return Action(HAND_OFF, 'first hand-off')
    if not sub['enabled'] and f.disabled_by in PLANNED_STOPS:
        return Action(HAND_OFF, PLANNED_STOPS[f.disabled_by])
    if f.slot is None:
        return Action(HAND_OFF, f'its slot {sub["slot"]} is gone from the master', planned=False)
    if f.slot['wal_status'] == 'lost':
        return Action(HAND_OFF, f'its slot {sub["slot"]} lost WAL the slave had not received '
                                '([database] slot_wal_keep_size exceeded)', planned=False)
    if not sub['enabled']:
        if f.re_enabled != re_enabled(sub['slot'], sub.get('applied', 0)):
            return Action(ENABLE, f'the subscription stopped on an error (a restart of the '
                                  f'master\'s PostgreSQL, its walsender ended, the connection '
                                  f'reset: disable_on_error); its slot {sub["slot"]} is kept: '
                                  'enabled again, it resumes where the slave confirmed')
        return Action(HAND_OFF, f'the subscription stopped on an apply error or conflict '
                                f'({sub["errors"]} errors counted), again without progress '
                                'since it was enabled again', planned=False)
    if f.tables_changed:  # a subscription takes a table's changes from its own start only
        return Action(HAND_OFF, 'the published tables changed')
    return Action(NOTHING, 'streaming')


def re_enabled(slot: str, applied: int) -> str:
    """The mark recorded when a subscription disabled on an error is enabled again: disabled
    again on the same slot with no transaction applied since (the subscription's origin at the
    same master position) means no progress: a hand-off then."""
    return f'{slot}:{applied}'


def stale_slots(slots: dict[str, dict], current: str | None) -> list[str]:
    """Slots of ours on the master that no subscription uses any more (left by an earlier
    hand-off, or one cut short): dropped when inactive."""
    return sorted(name for name, s in slots.items() if name != current and not s['active'])


def slot_name(now: float) -> str:
    return f'{SLOT_PREFIX}{int(now * 1000)}'


def subscription_refusal(relations: set[tuple[str, str]], copied: set[str]) -> str | None:
    """Why a new subscription's table list (schema, table) must not be applied: it must be
    exactly the copied tables of the master's public schema (anything else the master
    publishes, an excluded table or a catalog-named one, would be written on the slave);
    None when it is."""
    extra = sorted(f'{schema}.{table}' for schema, table in relations
                   if schema != 'public' or table not in copied)
    missing = sorted(copied - {table for schema, table in relations if schema == 'public'})
    if not extra and not missing:
        return None
    said = []
    if extra:
        said.append(f'it also lists {", ".join(extra[:10])}' +
                    (f' (and {len(extra) - 10} more)' if len(extra) > 10 else ''))
    if missing:
        said.append(f'it lacks {", ".join(missing[:10])}' +
                    (f' (and {len(missing) - 10} more)' if len(missing) > 10 else ''))
    return ('the master\'s publication is not exactly the copied tables of its public schema ('
            + '; '.join(said) + '): the hand-off is refused and the slave keeps what it had. '
            'The hourly run on the master puts the publication back in step; a publication '
            'listing other tables means someone changed it on the master: check who')


# Never worse than hourly: when the slave does not stream, the master's hourly run copies as in
# hourly mode. The causes, each named; the master tells what it sees from its side, the slave
# (wazo-ha-stream) what it meets when it reaches out.
NOT_PAIRED = 'not paired'         # no stream password: wazo-sync -i not run since continuous mode
WAL_LEVEL = 'wal_level'           # wal_level = logical written, not active until a restart
UNREACHABLE = 'unreachable'       # the slave cannot reach the master's TCP 5432 (slave side)
NO_SLOT = 'no slot'               # the slave never handed off (master side)
AWAITING = 'awaiting'             # paired just now, no slot yet: the slave's next minute hands off
SLOT_LOST = 'slot lost'           # the slot lost WAL the slave had not received
NOT_STREAMING = 'not streaming'   # the slave's slot is inactive (master side)
BROKEN = 'broken'                 # the stream fails otherwise (slave side)

FIX_PORT = 'open TCP 5432 from the slave to the master (firewall)'
FIX_PAIR = 'run wazo-sync -i on the master'
FIX_RESTART = ('restart PostgreSQL on the master at a quiet time: systemctl restart postgresql '
               '(wazo-ha never restarts a serving master\'s PostgreSQL)')
FIXES = {
    NOT_PAIRED: FIX_PAIR,
    WAL_LEVEL: FIX_RESTART,
    UNREACHABLE: FIX_PORT,
    NO_SLOT: FIX_PORT + '; wazo-ha-status on the slave says why it does not hand off',
    AWAITING: 'nothing: the slave hands off at its next cron minute (wazo-ha-stream); if it '
              'does not, the next hourly run says why',
    SLOT_LOST: 'nothing: the slave hands off afresh at its next wazo-ha-stream run',
    NOT_STREAMING: FIX_PORT + '; wazo-ha-status on the slave says why it does not stream',
    BROKEN: 'see wazo-ha-status and the log on the slave',
}
# causes not mailed: they pass by themselves
UNMAILED_CAUSES = (AWAITING,)
# the causes a slot of the slave's had when the fallback copy dropped it: kept as the cause
# until the slave hands off again (any other cause is read afresh at each run)
DROPPED_CAUSES = (SLOT_LOST, NOT_STREAMING)
# libpq's words for a master out of reach
UNREACHABLE_WORDS = ('timeout expired', 'Connection refused', 'No route to host',
                     'Network is unreachable', 'server closed the connection unexpectedly')


@dataclass(frozen=True)
class MasterView:
    """What the master's hourly run reads of the stream (continuous mode)."""
    wal_level: str                 # the active value (SHOW wal_level)
    paired: bool                   # the stream role has a password (wazo-sync -i ran)
    slots: dict[str, dict]         # our slots on the master (logical.slots)
    # (cause, said) of the fallback copy that dropped the slave's slot (a slot-side cause,
    # DROPPED_CAUSES): until the slave hands off again, its missing slot is that cause still
    dropped: tuple[str, str] | None = None
    # paired for less than [database] first_hand_off_wait and no slot of the slave's seen since
    # (first_hand_off): its first hand-off is due at its next cron minute
    awaiting: bool = False


@dataclass(frozen=True)
class InForce:
    """Which replication is in force for the slave, and why."""
    streaming: bool
    cause: str | None = None       # one of the names above, None when streaming
    said: str = 'continuous'       # what status and the mail say
    slot: str | None = None        # the slave's slot (the active one, else the newest)

    @property
    def fix(self) -> str:
        return FIXES.get(self.cause, '') if self.cause else ''


def slave_slot(slots: dict[str, dict]) -> str | None:
    """The slot the slave streams on: the active one, else the newest (names carry the time)."""
    return max(slots, key=lambda n: (slots[n]['active'], n)) if slots else None


def in_force(view: MasterView) -> InForce:
    """On the master: does the stream carry the slave's rows? When not, the hourly run copies."""
    if view.wal_level != 'logical':
        return InForce(False, WAL_LEVEL, f'wal_level is {view.wal_level} on the master: the '
                       'stream waits for a PostgreSQL restart')
    if not view.paired:
        return InForce(False, NOT_PAIRED, 'the pair is not paired for the stream yet (the stream '
                       'role has no password: wazo-sync -i has not run since continuous mode)')
    slot = slave_slot(view.slots)
    if slot is None and view.dropped is not None and view.dropped[0] in DROPPED_CAUSES:
        cause, said = view.dropped
        return InForce(False, cause, said + ' (its slot was dropped for the hourly copy; the slave '
                       'has not handed off since)')
    if slot is None and view.awaiting:
        return InForce(False, AWAITING, 'waiting for the slave\'s first hand-off (its next cron '
                       'minute, wazo-ha-stream): the pair was paired for the stream just now')
    if slot is None:
        return InForce(False, NO_SLOT, 'the slave has no slot on the master: it has not handed '
                       'off (it cannot reach the master\'s TCP 5432, or wazo-ha-stream does not '
                       'run there)')
    state = view.slots[slot]
    if state['wal_status'] == 'lost':
        return InForce(False, SLOT_LOST, f'the slave\'s slot {slot} lost WAL the slave had not '
                       'received ([database] slot_wal_keep_size)', slot)
    if not state['active']:
        return InForce(False, NOT_STREAMING, f'the slave\'s slot {slot} is inactive: the slave '
                       'does not stream (it cannot reach the master\'s TCP 5432, or its stream '
                       'is broken)', slot)
    return InForce(True, slot=slot)


def first_hand_off(record: dict, paired: bool, has_slot: bool, now: float,
                   wait: float) -> tuple[dict, bool]:
    """The master's record of the slave's first hand-off, brought up to date, and whether it is
    awaited: since the master's run first found the pair paired (wazo-sync -i), for `wait`
    seconds, as long as no slot of the slave's was seen. Not paired: no record."""
    if not paired:
        return {}, False
    since = record.get('paired_since')
    since = since if isinstance(since, (int, float)) and since <= now else now
    seen = record.get('slot_seen') is True or has_slot
    return {'paired_since': since, 'slot_seen': seen}, not seen and now - since < wait


def slave_cause(error: str) -> tuple[str, str]:
    """On the slave: the cause of a failed wazo-ha-stream run, and what status says of it."""
    if 'no password for the stream role' in error or 'refuses the stream role' in error:
        return NOT_PAIRED, ('the slave is not paired for the stream yet (wazo-sync -i has not run '
                            'since continuous mode)')
    if 'wal_level' in error:
        return WAL_LEVEL, 'wal_level is not logical on the master: the stream waits for a ' \
                          'PostgreSQL restart there'
    if any(word in error for word in UNREACHABLE_WORDS):
        why = next(word for word in UNREACHABLE_WORDS if word in error)
        return UNREACHABLE, f'the slave cannot reach the master\'s 5432 ({why})'
    return BROKEN, 'the stream is broken: ' + error.split('\n', 1)[0][:200]
