"""Running the built-in steps (wait, log, pause, approval): their effects are in the planner.

A built-in's attempt is claimed and recorded like any other, so it is leased, fenced and in the
journal; what makes it special is decided when it is recorded (a wait delays the successors, a
gate pauses the run). Only ``log`` does something while it runs.
"""

from __future__ import annotations

import logging
from typing import Any

from squid_mesh.definition.workflow import Step
from squid_mesh.engine.context import StepContext
from squid_mesh.engine.planner import StepResult

logger = logging.getLogger("squid_mesh.steps")


def run_builtin(step: Step, ctx: StepContext) -> StepResult:
    """Run a built-in step; it always succeeds with an empty output."""
    if step.kind == "log":
        level = logging.getLevelName(str(step.options["level"]).upper())
        extra: dict[str, Any] = {
            "run_id": ctx.run_id,
            "workflow": ctx.workflow,
            "step": ctx.step,
            "attempt": ctx.attempt,
        }
        logger.log(level, "%s", step.options["message"], extra=extra)
    return StepResult(output={})
