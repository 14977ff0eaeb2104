"""CLI arguments fuzzed (hypothesis): every command line ends in exit 0, 1 or 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import squid_mesh as sm
from squid_mesh.cli import cli
from tests.acceptance.workflows import all_workflows

APP = "tests.acceptance.workflows:all_workflows"
# Each command with its options (None: a flag). Values are fuzzed; the run id argument is the
# real run now and then, else junk.
COMMANDS: dict[tuple[str, ...], dict[str, object]] = {
    ("runs", "list"): {"--workflow": str, "--status": str, "--queue": str, "--limit": str,
                       "--cursor": str, "--json": None},
    ("runs", "show"): {"--history": None, "--json": None},
    ("runs", "explain"): {"--json": None},
    ("runs", "graph"): {"--format": str},
    ("runs", "cancel"): {"--reason": str, "--actor": str, "--idempotency-key": str,
                         "--metadata": str},
    ("runs", "resume"): {"--actor": str, "--comment": str, "--metadata": str},
    ("runs", "approve"): {"--actor": str, "--comment": str, "--metadata": str,
                          "--idempotency-key": str},
    ("runs", "reject"): {"--actor": str, "--comment": str},
    ("runs", "replay"): {"--actor": str, "--idempotency-key": str, "--allow-irreversible": None},
    ("runs", "wait"): {"--timeout": str, "--until": str, "--json": None},
    ("verify",): {"--json": None},
    ("purge",): {"--older-than": str},
    ("worker",): {"--queue": str, "--concurrency": str, "--lease": str, "--poll-interval": str,
                  "--grace-period": str},
}  # fmt: skip
NEEDS_RUN = {"show", "explain", "graph", "cancel", "resume", "approve", "reject", "replay", "wait"}
VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "5",
            "1e309",
            "nan",
            "30d",
            "dot",
            "json",
            "{}",
            "[1]",
            '{"a": 1}',
            "completed",
            "acc_gated",
            "default",
            "\x00",
            "\ud800",
            "'; DROP TABLE x; --",
            "../../etc/passwd",
        ]
    ),
    st.text(max_size=12),
)


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    path = draw(st.sampled_from(sorted(COMMANDS)))
    args = list(path)
    if path[-1] in NEEDS_RUN:
        args.append(draw(st.one_of(st.just("RUN"), st.just("RUN"), VALUES)))
    options = COMMANDS[path]
    for name in draw(st.lists(st.sampled_from(sorted(options)), max_size=3)):
        args.append(name)
        if options[name] is not None:
            args.append(draw(VALUES))
    return args


@pytest.fixture
def sqlite_url(tmp_path: Path) -> tuple[str, str]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    with sm.connect(url, workflows=all_workflows()) as mesh:
        mesh.migrate()
        run = mesh.start("acc_gated", {})
    return url, run.id


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(args=command_lines())
def test_fuzzed_command_lines_exit_cleanly(sqlite_url: tuple[str, str], args: list[str]) -> None:
    url, run_id = sqlite_url
    args = [run_id if a == "RUN" else a for a in args]  # a real run id, now and then
    if args[0] == "worker":
        args = [*args, "--max-idle", "0"]  # a worker without it would run until a signal
    if args[:2] == ["runs", "wait"]:
        # The run never finishes here: a short default, which a fuzzed --timeout after it overrides.
        args = [*args[:3], "--timeout", "0.05", *args[3:]]
    result = CliRunner().invoke(cli, ["--db", url, "--app", APP, *args])
    assert result.exit_code in (0, 1, 2), (args, result.output, result.exception)
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), (args, repr(result.exception))
