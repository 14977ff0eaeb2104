"""squid-mesh: an embedded durable workflow runtime on your own SQLite or PostgreSQL database.

Example:
    >>> import squid_mesh as sm
    >>> wf = sm.Workflow("greet", version="1")
    >>> @wf.step()
    ... def hello(input, ctx):
    ...     return {"greeting": "hello " + input["name"]}
    >>> wf.transition("hello", to=sm.COMPLETE)
    >>> mesh = sm.connect("sqlite:///:memory:", workflows=[wf])
    >>> mesh.migrate()
    >>> run = mesh.start("greet", {"name": "ann"})
    >>> while mesh.execute_next(owner_id="worker-1"):
    ...     pass
    >>> mesh.inspect_run(run.id).status
    <RunStatus.COMPLETED: 'completed'>
"""

from squid_mesh.definition.conditions import Condition
from squid_mesh.definition.outcomes import Fail, Retry
from squid_mesh.definition.payload import Field
from squid_mesh.definition.retry import Backoff, RetryPolicy
from squid_mesh.definition.spec import Registry, SpecError
from squid_mesh.definition.triggers import Cron, Manual
from squid_mesh.definition.workflow import COMPLETE, Workflow
from squid_mesh.engine.context import StepContext
from squid_mesh.engine.entropy import SeededEntropy, SystemEntropy
from squid_mesh.engine.results import Execution, Problem
from squid_mesh.errors import (
    Cancelled,
    DefinitionDriftWarning,
    DefinitionError,
    IdempotencyConflictError,
    InputMappingError,
    InvalidOptionError,
    LeaseLostError,
    MigrationRefusedError,
    PayloadError,
    ReplayRefusedError,
    RunFinishedError,
    RunNotFoundError,
    RunNotPausedError,
    SquidMeshError,
    StoreError,
    UnknownWorkflowError,
    WaitTimeoutError,
    WrongGateError,
)
from squid_mesh.journal.fold import AttemptStatus, RunStatus
from squid_mesh.mesh import Mesh, connect
from squid_mesh.observe.http import MetricsServer, serve_metrics
from squid_mesh.read.explain import Explanation, Reason
from squid_mesh.read.graph import GraphEdge, GraphNode, RunGraph
from squid_mesh.read.listing import RunPage, RunSummary
from squid_mesh.read.queues import QueueLimits, QueueStats, ScheduleView, WorkerSeen
from squid_mesh.read.snapshot import (
    AttemptView,
    ChildView,
    CommandView,
    GateView,
    HistoryEntry,
    ParentView,
    RunSnapshot,
    StepView,
)

__version__ = "0.1.0"

from squid_mesh.worker import Worker

__all__ = [
    "COMPLETE",
    "AttemptStatus",
    "AttemptView",
    "Backoff",
    "Cancelled",
    "ChildView",
    "CommandView",
    "Condition",
    "Cron",
    "DefinitionDriftWarning",
    "DefinitionError",
    "Execution",
    "Explanation",
    "Fail",
    "Field",
    "GateView",
    "GraphEdge",
    "GraphNode",
    "HistoryEntry",
    "IdempotencyConflictError",
    "InputMappingError",
    "InvalidOptionError",
    "LeaseLostError",
    "Manual",
    "Mesh",
    "MetricsServer",
    "MigrationRefusedError",
    "ParentView",
    "PayloadError",
    "Problem",
    "QueueLimits",
    "QueueStats",
    "Reason",
    "Registry",
    "ReplayRefusedError",
    "Retry",
    "RetryPolicy",
    "RunFinishedError",
    "RunGraph",
    "RunNotFoundError",
    "RunNotPausedError",
    "RunPage",
    "RunSnapshot",
    "RunStatus",
    "RunSummary",
    "ScheduleView",
    "SeededEntropy",
    "SpecError",
    "SquidMeshError",
    "StepContext",
    "StepView",
    "StoreError",
    "SystemEntropy",
    "UnknownWorkflowError",
    "WaitTimeoutError",
    "Worker",
    "WorkerSeen",
    "Workflow",
    "WrongGateError",
    "__version__",
    "connect",
    "serve_metrics",
]
