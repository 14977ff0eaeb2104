-- squid-mesh schema, version 0010: priorities, trace context and queue limits.
--
-- priority: a run's attempts inherit it (higher is claimed first; the claim index
-- squid_mesh_attempts_due already leads with it). trace: the W3C trace context of the start, so
-- the spans of the run's steps join the trace that started it.

ALTER TABLE squid_mesh_runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE squid_mesh_runs ADD COLUMN trace TEXT;

-- One row per queue with a limit (mesh.set_queue_limits). A claim on a limited queue locks its
-- row first, so claims of that queue are serialised across all workers: the count of claimed
-- attempts and the token bucket (tokens, refilled_at) are read and written under that lock.
CREATE TABLE squid_mesh_queues (
    queue       TEXT PRIMARY KEY,
    concurrency INTEGER,
    rate_limit  INTEGER,
    rate_period REAL,
    tokens      REAL,
    refilled_at REAL,
    updated_at  REAL NOT NULL
);

-- Attempts claimed and not finished, by queue and lease expiry: a limited queue's claim counts
-- the unexpired ones here (an expired lease no longer holds a slot).
CREATE INDEX squid_mesh_attempts_claimed
    ON squid_mesh_attempts (queue, due_at) WHERE status = 'running';

-- The earliest moment anything of a queue comes due (a retry's backoff, a wait, a lease that
-- runs out): an idle worker sleeps until then instead of polling.
CREATE INDEX squid_mesh_attempts_next
    ON squid_mesh_attempts (queue, due_at) WHERE due_at IS NOT NULL;
