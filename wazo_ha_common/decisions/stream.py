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
        return Action(HAND_OFF, f'the subscription stopped on an apply error or conflict '
                                f'({sub["errors"]} errors counted)', planned=False)
    if f.tables_changed:  # a subscription takes a table's changes from its own start only
        return Action(HAND_OFF, 'the published tables changed')
    return Action(NOTHING, 'streaming')


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
