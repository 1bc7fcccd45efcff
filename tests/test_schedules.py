"""Schedules without Redis: next fire times, missed ticks after a downtime, DST, and transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from flowjobs.core.cron import HORIZON_YEARS, check_cron, latest_tick, next_fire, plan_fire
from flowjobs.core.errors import InvalidCron
from flowjobs.core.schedules import (
    ScheduleKind,
    ScheduleState,
    broken,
    check_recurring_id,
    declare,
    fired,
    flow_schedule_id,
    override_cron,
    pause,
    resume,
)

T0 = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
SCHEDULE_ID = flow_schedule_id(uuid4(), "nightly")


def schedule(cron: str = "*/5 * * * *", **extra: object) -> ScheduleState:
    return ScheduleState(schedule_id=SCHEDULE_ID, kind=ScheduleKind.flow, cron=cron, updated_at=T0, **extra)


def test_next_fire_is_strictly_after_and_latest_tick_is_at_or_before() -> None:
    assert next_fire("*/5 * * * *", T0) == T0 + timedelta(minutes=5)
    assert latest_tick("*/5 * * * *", T0) == T0
    assert latest_tick("*/5 * * * *", T0 + timedelta(minutes=4, seconds=59.9)) == T0
    # A sixth field is seconds.
    assert next_fire("* * * * * */2", T0) == T0 + timedelta(seconds=2)


def test_a_due_tick_on_time_fires_itself() -> None:
    plan = plan_fire("*/5 * * * *", None, T0, T0 + timedelta(seconds=0.3), grace_seconds=3600)
    assert (plan.tick, plan.next_fire, plan.skipped) == (T0, T0 + timedelta(minutes=5), 0)


def test_after_an_hour_down_only_the_latest_missed_tick_fires() -> None:
    now = T0 + timedelta(hours=1, minutes=2)
    plan = plan_fire("*/5 * * * *", None, T0, now, grace_seconds=3600)
    assert plan.tick == T0 + timedelta(hours=1)
    assert plan.skipped == 12  # 12:00 … 12:55 are skipped, not replayed
    assert plan.next_fire == T0 + timedelta(hours=1, minutes=5)


def test_a_missed_tick_older_than_the_grace_window_does_not_fire() -> None:
    now = T0 + timedelta(days=1, minutes=30)
    plan = plan_fire("0 12 * * *", None, T0, now, grace_seconds=600)
    assert plan.tick is None
    assert plan.next_fire == T0 + timedelta(days=2)


def test_no_tick_before_the_schedule_owed_one_fires() -> None:
    # Due at 12:05 (created at 12:01): at 12:05:00.5 the latest tick is 12:05, never 12:00.
    plan = plan_fire(
        "*/5 * * * *", None, T0 + timedelta(minutes=5), T0 + timedelta(minutes=5, seconds=0.5), 60
    )
    assert plan.tick == T0 + timedelta(minutes=5)


def test_dst_spring_forward_fires_once_at_the_first_instant_after_the_gap() -> None:
    # Europe/Berlin, 2024-03-31: 02:00 → 03:00. 02:30 does not exist that night.
    start = datetime(2024, 3, 30, 12, tzinfo=UTC)
    first = next_fire("30 2 * * *", start, "Europe/Berlin")
    second = next_fire("30 2 * * *", first, "Europe/Berlin")
    assert first == datetime(2024, 3, 31, 1, 0, tzinfo=UTC)  # 03:00 CEST
    assert second == datetime(2024, 4, 1, 0, 30, tzinfo=UTC)  # 02:30 CEST


def test_dst_keeps_the_wall_clock_time_across_the_change() -> None:
    start = datetime(2024, 3, 30, 12, tzinfo=UTC)
    before = next_fire("0 9 * * *", start - timedelta(days=1), "Europe/Berlin")
    after = next_fire("0 9 * * *", start + timedelta(days=1), "Europe/Berlin")
    assert before.hour == 8 and after.hour == 7  # 09:00 CET, then 09:00 CEST


def test_dst_fall_back_fires_at_both_occurrences_of_a_repeated_time() -> None:
    start = datetime(2024, 10, 26, 12, tzinfo=UTC)
    first = next_fire("30 2 * * *", start, "Europe/Berlin")
    second = next_fire("30 2 * * *", first, "Europe/Berlin")
    assert (first, second) == (
        datetime(2024, 10, 27, 0, 30, tzinfo=UTC),
        datetime(2024, 10, 27, 1, 30, tzinfo=UTC),
    )


def test_bad_expressions_and_zones_are_refused() -> None:
    with pytest.raises(InvalidCron, match="does not parse"):
        declare(None, schedule("61 * * * *"), T0)
    with pytest.raises(InvalidCron, match="time zone"):
        declare(None, schedule(time_zone="Mars/Olympus"), T0)
    with pytest.raises(InvalidCron):
        check_recurring_id("flow-mine")
    with pytest.raises(InvalidCron):
        check_recurring_id("has space")


def test_declare_keeps_pause_override_and_owed_tick_and_moves_on_a_new_expression() -> None:
    created = declare(None, schedule(), T0 - timedelta(minutes=1))
    assert created.next_fire_at == T0
    # Declared again unchanged later (a restart): the owed tick is kept, so a missed tick fires.
    again = declare(created, schedule(), T0 + timedelta(hours=1))
    assert again is created
    overridden = override_cron(created, "0 * * * *", T0)
    paused = pause(overridden, T0)
    edited = declare(paused, schedule("*/10 * * * *"), T0)
    assert edited.cron == "*/10 * * * *"
    assert (edited.cron_override, edited.is_paused, edited.next_fire_at) == ("0 * * * *", True, None)


def test_pause_resume_and_override() -> None:
    state = declare(None, schedule(), T0)
    paused = pause(state, T0)
    assert paused.is_paused and paused.next_fire_at is None
    resumed = resume(paused, T0 + timedelta(hours=2, minutes=1))
    assert resumed.next_fire_at == T0 + timedelta(hours=2, minutes=5)  # paused ticks are not caught up
    overridden = override_cron(resumed, "0 0 * * *", T0)
    assert overridden.effective_cron == "0 0 * * *"
    assert overridden.next_fire_at == T0 + timedelta(hours=12)
    with pytest.raises(InvalidCron):
        override_cron(resumed, "nope", T0)
    cleared = override_cron(overridden, None, T0)
    assert cleared.effective_cron == "*/5 * * * *" and cleared.cron_override is None


def test_fired_records_the_tick_and_the_next_fire_time() -> None:
    state = declare(None, schedule(), T0 - timedelta(minutes=1))
    plan = plan_fire(state.cron, None, T0, T0 + timedelta(seconds=1), 60)
    after = fired(state, plan, T0 + timedelta(seconds=1), job_id="fj-x-trigger")
    assert (after.last_tick_at, after.last_job_id, after.next_fire_at) == (
        T0,
        "fj-x-trigger",
        T0 + timedelta(minutes=5),
    )
    assert ScheduleState.from_fields(after.to_fields()) == after


def test_a_schedule_keeps_its_stored_field_name() -> None:
    """Schedules stored before ``schedule_id`` had its name hold it in the hash field ``job_id``:
    states are still written that way, so old and new processes read each other's."""
    state = declare(None, schedule(), T0)
    fields = state.to_fields()
    assert fields["job_id"] == SCHEDULE_ID and "schedule_id" not in fields
    assert ScheduleState.from_fields(fields) == state


@pytest.mark.parametrize("cron", ["0 0 30 2 *", "30 2 31 4 *", "0 0 31 2,4,6,9,11 *", "0 0 1 1 * 0 2020"])
def test_an_expression_with_no_tick_within_the_horizon_never_fires(cron: str) -> None:
    with pytest.raises(InvalidCron, match=f"never fires: no tick in the {HORIZON_YEARS} years after"):
        check_cron(cron, "Europe/Berlin", T0)
    with pytest.raises(InvalidCron, match="never fires"):
        next_fire(cron, T0)
    with pytest.raises(InvalidCron, match="never fires"):
        declare(None, schedule(cron), T0)
    with pytest.raises(InvalidCron, match="never fires"):
        override_cron(pause(declare(None, schedule(), T0), T0), cron, T0)


def test_leap_day_expressions_are_valid_even_across_2100_which_has_none() -> None:
    late_2096 = datetime(2096, 3, 1, tzinfo=UTC)
    assert check_cron("0 0 29 2 *", "Pacific/Kiritimati", late_2096) == "0 0 29 2 *"
    assert next_fire("0 0 29 2 *", late_2096) == datetime(2104, 2, 29, tzinfo=UTC)
    assert latest_tick("0 0 29 2 *", datetime(2104, 2, 28, tzinfo=UTC)) == datetime(2096, 2, 29, tzinfo=UTC)
    # A year in the horizon is fine; one past it is not.
    assert next_fire("0 0 1 1 * 0 2031", T0) == datetime(2031, 1, 1, tzinfo=UTC)
    with pytest.raises(InvalidCron):
        check_cron("0 0 1 1 * 0 2033", None, T0)


def test_a_broken_schedule_is_out_of_the_due_index_until_planned_again() -> None:
    state = broken(declare(None, schedule(), T0), "no tick")
    assert (state.error, state.next_fire_at, state.summary()["error"]) == ("no tick", None, "no tick")
    # A restart re-declaring it unchanged keeps the mark; a new expression in the flow file clears it.
    assert declare(state, schedule(), T0) is state
    moved = declare(state, schedule("0 * * * *"), T0)
    assert (moved.error, moved.next_fire_at) == (None, T0 + timedelta(hours=1))
    # Resume of a marked schedule plans it again, or refuses while it still has no tick.
    assert resume(state, T0).next_fire_at == T0 + timedelta(minutes=5)
    assert resume(state, T0).error is None
    # What an older release stored (an override with no tick), then marked by the duty.
    stuck = broken(state.model_copy(update={"cron_override": "0 0 30 2 *"}), "x")
    with pytest.raises(InvalidCron):
        resume(stuck, T0)
    cleared = override_cron(stuck, None, T0)
    assert (cleared.error, cleared.next_fire_at) == (None, T0 + timedelta(minutes=5))
    paused_fixed = override_cron(pause(stuck, T0), "0 * * * *", T0)
    assert (paused_fixed.error, paused_fixed.next_fire_at) == (None, None)
