"""Deploy-safe versions: runs stay on their version, park where it is not loaded, and move on."""

from __future__ import annotations

import warnings

import pytest

import squid_mesh as sm
from tests.conftest import MeshFactory


def order(version: str, *, second: str = "ship") -> sm.Workflow:
    """pack -> <second> -> complete; each step records which version ran it."""
    wf = sm.Workflow("order", version=version)

    @wf.step()
    def pack(input: dict, ctx: sm.StepContext) -> dict:
        return {"packed_by": ctx.version}

    def finish(input: dict, ctx: sm.StepContext) -> dict:
        return {"finished_by": ctx.version}

    wf.step(second)(finish)
    wf.transition("pack", to=second)
    wf.transition(second, to=sm.COMPLETE)
    return wf


def other() -> sm.Workflow:
    wf = sm.Workflow("other", version="1")

    @wf.step()
    def only(input: dict, ctx: sm.StepContext) -> dict:
        return {"done": True}

    wf.transition("only", to=sm.COMPLETE)
    return wf


def test_a_deploy_parks_old_runs_then_finishes_or_migrates_them(make_mesh: MeshFactory) -> None:
    # A process with v1 starts three runs and gets each through its first step, then stops.
    old = make_mesh([order("1"), other()])
    runs = [old.start("order", {"n": i}).id for i in range(3)]
    for _ in runs:
        assert old.execute_next(owner_id="old") is not None
    old.close()

    # The next deploy has v2 only: the v1 runs are parked, explained, and block nobody.
    new = make_mesh([order("2"), other()])
    fresh = new.start("other", {})
    latest = new.start("order", {"n": 9})
    assert latest.version == "2", "new starts use the newest version"
    done = []
    while (execution := new.execute_next(owner_id="new")) is not None:
        done.append((execution.run_id, execution.step))
    assert {run for run, _ in done} == {fresh.id, latest.id}
    for run_id in runs:
        snap = new.inspect_run(run_id)
        assert snap.status == sm.RunStatus.RUNNING and snap.current_steps == ("ship",)
        assert snap.parked is not None
        assert "parked: version '1' of workflow 'order' is not loaded here" in snap.parked
    assert new.inspect_run(latest.id).parked is None

    # An operator moves one run to v2; a process with both versions finishes the others on v1.
    moved = new.migrate_run(runs[0], to_version="2", actor="ops")
    assert moved.version == "2" and moved.parked is None
    assert new.execute_next(owner_id="new") is not None
    both = make_mesh([order("1"), order("2"), other()])
    while both.execute_next(owner_id="both"):
        pass
    first = both.inspect_run(runs[0], history=True)
    assert first.status == sm.RunStatus.COMPLETED
    assert first.context == {"packed_by": "1", "finished_by": "2"}
    receipt = next(h for h in first.history or () if h.data.get("command") == "migrate")
    assert receipt.data["actor"] == "ops" and receipt.data["metadata"] == {"from": "1", "to": "2"}
    for run_id in runs[1:]:
        snap = both.inspect_run(run_id)
        assert snap.status == sm.RunStatus.COMPLETED and snap.version == "1"
        assert snap.context == {"packed_by": "1", "finished_by": "1"}
    assert both.verify() == []


def test_a_migration_to_a_version_without_the_waiting_step_is_refused(
    make_mesh: MeshFactory,
) -> None:
    mesh = make_mesh([order("1"), order("2", second="deliver")])
    run = mesh.start("order", {})  # on v2, the newest; move it back and forth
    moved = mesh.migrate_run(run.id, to_version="1")
    assert moved.version == "1"
    mesh.execute_next(owner_id="w")  # pack, on v1: the run now waits on "ship"
    with pytest.raises(sm.MigrationRefusedError, match=r"version '2' has no step 'ship'") as no:
        mesh.migrate_run(run.id, to_version="2")
    assert no.value.steps == ["ship"] and no.value.code == "migration_refused"
    assert mesh.inspect_run(run.id).version == "1"
    with pytest.raises(sm.InvalidOptionError, match=r"version '3' .*registered: \['1', '2'\]"):
        mesh.migrate_run(run.id, to_version="3")
    same = mesh.migrate_run(run.id, to_version="1")
    assert same.revision == mesh.inspect_run(run.id).revision
    while mesh.execute_next(owner_id="w"):
        pass
    with pytest.raises(sm.RunFinishedError):
        mesh.migrate_run(run.id, to_version="1")


def test_a_version_whose_code_changed_is_reported(make_mesh: MeshFactory) -> None:
    make_mesh([order("1")])  # records v1's fingerprint
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_mesh([order("1")])  # the same definition: nothing to report
    with pytest.warns(sm.DefinitionDriftWarning, match=r"changed without a new version"):
        make_mesh([order("1", second="deliver")])
    with pytest.raises(sm.DefinitionError, match=r"workflow 'order' version '1'"):
        make_mesh([order("1", second="deliver")], strict_versions=True)


def test_a_step_whose_run_moved_to_a_version_this_worker_lacks_goes_back_to_the_queue(
    make_mesh: MeshFactory,
) -> None:
    operator = make_mesh([order("1"), order("2")])
    run_id: list[str] = []
    wf = sm.Workflow("order", version="1")

    @wf.step()
    def pack(input: dict, ctx: sm.StepContext) -> dict:
        # While this v1-only worker runs the step, an operator moves the run to v2.
        operator.migrate_run(ctx.run_id, to_version="2")
        return {"packed_by": "v1 worker"}

    @wf.step()
    def ship(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    wf.transition("pack", to="ship")
    wf.transition("ship", to=sm.COMPLETE)
    worker = make_mesh([wf])
    run_id.append(worker.start("order", {}).id)
    done = worker.execute_next(owner_id="v1")
    assert done is not None and done.outcome == "released"
    snap = operator.inspect_run(run_id[0])
    assert snap.version == "2" and snap.steps[0].attempts[0].status == "scheduled"
    while operator.execute_next(owner_id="v2"):
        pass
    final = operator.inspect_run(run_id[0])
    assert final.status == sm.RunStatus.COMPLETED
    assert final.context == {"packed_by": "2", "finished_by": "2"}
    assert operator.verify() == []


def fan(version: str, *, extra: bool = False) -> sm.Workflow:
    wf = sm.Workflow("fan", version=version)

    def work(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    wf.step("a")(work)
    wf.step("b", after=["a"])(work)
    if extra:
        wf.step("x", after=["a"])(work)
    return wf


def test_a_dag_version_adding_a_step_after_completed_ones_is_refused(
    make_mesh: MeshFactory,
) -> None:
    mesh = make_mesh([fan("2", extra=True), fan("1")])
    run = mesh.start("fan", {})  # on v1, registered last
    mesh.execute_next(owner_id="w")  # a
    with pytest.raises(sm.MigrationRefusedError, match=r"would never run") as refused:
        mesh.migrate_run(run.id, to_version="2")
    assert refused.value.steps == ["x"]


def test_a_run_with_parallel_branches_cannot_move_to_a_state_machine_version(
    make_mesh: MeshFactory,
) -> None:
    branches = sm.Workflow("shape", version="1")
    machine = sm.Workflow("shape", version="2")

    def work(input: dict, ctx: sm.StepContext) -> dict:
        return {}

    branches.step("left")(work)
    branches.step("right")(work)
    branches.step("join", after=["left", "right"])(work)
    machine.step("left")(work)
    machine.step("right")(work)
    machine.transition("left", to="right")
    machine.transition("right", to=sm.COMPLETE)
    mesh = make_mesh([machine, branches])
    run = mesh.start("shape", {})  # on v1: two roots are live
    with pytest.raises(sm.MigrationRefusedError, match=r"state machine, and the run runs branches"):
        mesh.migrate_run(run.id, to_version="2")
