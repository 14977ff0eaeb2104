"""Cron activation: one run per slot, catch-up after downtime, the cron package's DST rules."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

import squid_mesh as sm
from tests.conftest import MeshFactory

BERLIN = ZoneInfo("Europe/Berlin")


def digest(expression: str, *, timezone: str = "UTC", catch_up: str = "skip") -> sm.Workflow:
    wf = sm.Workflow(
        "digest",
        version="1",
        triggers=[
            sm.Manual(),
            sm.Cron(
                expression,
                timezone=timezone,
                name="daily",
                catch_up=catch_up,  # type: ignore[arg-type]
                payload={"channel": "ops"},
            ),
        ],
    )

    @wf.step()
    def send(input: dict, ctx: sm.StepContext) -> dict:
        return {"sent_for": input["schedule"]["slot"], "channel": input["channel"]}

    wf.transition("send", to=sm.COMPLETE)
    return wf


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def slots_of(runs: list[sm.RunSnapshot]) -> list[str]:
    return [run.context["schedule"]["slot"] for run in runs]


def test_a_trigger_starts_from_its_first_tick_then_fires_each_slot_once(
    make_mesh: MeshFactory,
) -> None:
    mesh = make_mesh([digest("0 6 * * *")])
    assert mesh.cron_tick(now=at("2026-11-24T05:00:00+00:00")) == [], "no backfill"
    assert mesh.cron_tick(now=at("2026-11-24T05:59:59+00:00")) == []
    (run,) = mesh.cron_tick(now=at("2026-11-24T06:00:00.500+00:00"))
    assert mesh.cron_tick(now=at("2026-11-24T06:00:30+00:00")) == [], "the slot fired already"
    assert (run.trigger, run.payload, run.created) == ("daily", {"channel": "ops"}, True)
    assert run.context["schedule"] == {
        "trigger": "daily",
        "slot": "2026-11-24T06:00:00+00:00",
        "fired_at": "2026-11-24T06:00:00.500000+00:00",
    }
    while mesh.execute_next(owner_id="w", now=at("2026-11-24T06:01:00+00:00")):
        pass
    done = mesh.inspect_run(run.id, history=True)
    assert done.status == sm.RunStatus.COMPLETED
    assert done.context["sent_for"] == "2026-11-24T06:00:00+00:00"
    receipt = next(h for h in done.history or () if h.kind == "command_received")
    assert receipt.data["command"] == "cron"
    assert receipt.data["idempotency_key"] == "cron:daily:2026-11-24T06:00:00+00:00"


@pytest.mark.parametrize(("catch_up", "expected"), [("skip", 1), ("all", 12)])
def test_catch_up_after_a_three_hour_downtime(
    make_mesh: MeshFactory, catch_up: str, expected: int
) -> None:
    mesh = make_mesh([digest("*/15 * * * *", catch_up=catch_up)])
    mesh.cron_tick(now=at("2026-11-24T09:00:00+00:00"))
    runs = mesh.cron_tick(now=at("2026-11-24T12:00:00+00:00"))
    assert len(runs) == expected
    assert slots_of(runs)[-1] == "2026-11-24T12:00:00+00:00"
    if catch_up == "all":
        assert slots_of(runs)[0] == "2026-11-24T09:15:00+00:00"
    assert mesh.cron_tick(now=at("2026-11-24T12:05:00+00:00")) == []
    assert mesh.run_counts(workflow="digest")[sm.RunStatus.RUNNING] == expected


@pytest.mark.parametrize(
    ("expression", "since", "until"),
    [
        # Spring forward: 02:30 does not exist on 29 March in Berlin.
        ("30 2 * * *", "2026-03-27T12:00:00+01:00", "2026-03-31T12:00:00+02:00"),
        # Fall back: the hour from 02:00 to 03:00 happens twice on 25 October.
        ("0 * * * *", "2026-10-24T23:30:00+02:00", "2026-10-26T00:30:00+01:00"),
    ],
)
def test_daylight_saving_days_in_berlin_follow_the_cron_package(
    make_mesh: MeshFactory, expression: str, since: str, until: str
) -> None:
    mesh = make_mesh([digest(expression, timezone="Europe/Berlin", catch_up="all")])
    mesh.cron_tick(now=at(since))
    runs = mesh.cron_tick(now=at(until))
    walker = croniter(expression, datetime.fromisoformat(since).astimezone(BERLIN))
    expected = []
    while (slot := walker.get_next(float)) <= at(until):
        expected.append(datetime.fromtimestamp(slot, UTC).isoformat())
    assert slots_of(runs) == expected
    assert len(set(expected)) == len(expected)


def test_bad_tick_times_are_refused(make_mesh: MeshFactory) -> None:
    mesh = make_mesh([digest("0 6 * * *")])
    with pytest.raises(sm.InvalidOptionError) as refused:
        mesh.cron_tick(now="tomorrow")  # type: ignore[arg-type]
    assert refused.value.option == "now"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"catch_up": "some"}, r"catch_up must be 'skip' or 'all'"),
        ({"max_catch_up": 0}, r"max_catch_up must be an integer from 1 to 10000"),
        ({"payload": {"when": object()}}, r"payload must be a JSON object"),
        ({"payload": ["x"]}, r"payload must be a JSON object"),
    ],
)
def test_bad_cron_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(sm.DefinitionError, match=message):
        sm.Cron("0 6 * * *", **options)  # type: ignore[arg-type]


def test_a_cron_payload_that_does_not_fit_the_schema_is_refused_when_declared() -> None:
    wf = sm.Workflow(
        "strict",
        payload={"channel": sm.Field(str)},
        triggers=[sm.Cron("0 6 * * *", name="morning", payload={"channel": 7})],
    )

    @wf.step()
    def only(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    wf.transition("only", to=sm.COMPLETE)
    with pytest.raises(sm.DefinitionError, match=r"cron trigger 'morning': its payload"):
        wf.definition()
    named = sm.Workflow("named", triggers=[sm.Manual(name="no spaces allowed")])
    named.step("only")(only)
    named.transition("only", to=sm.COMPLETE)
    with pytest.raises(sm.DefinitionError, match=r"trigger name 'no spaces allowed'"):
        named.definition()
