-- squid-mesh schema, SQLite, version 0001.
--
-- Three tables. squid_mesh_facts is the append-only journal: the truth. squid_mesh_runs and
-- squid_mesh_attempts are projections, written in the same transaction as the facts they follow
-- from, so that claims and reads touch a bounded number of rows whatever the size of the history.
-- JSON is stored as TEXT (key order is the order results were applied); times are epoch seconds.

CREATE TABLE squid_mesh_runs (
    run_id          TEXT PRIMARY KEY,
    workflow        TEXT NOT NULL,
    version         TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    queue           TEXT NOT NULL,
    trigger         TEXT NOT NULL,
    status          TEXT NOT NULL,
    payload         TEXT NOT NULL,
    context         TEXT NOT NULL,
    error           TEXT,
    idempotency_key TEXT,
    payload_hash    TEXT NOT NULL,
    -- Number of facts in the run's journal; every write is guarded by it (optimistic concurrency).
    rev             INTEGER NOT NULL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);

-- An idempotency key names one run per workflow for the run's whole lifetime.
CREATE UNIQUE INDEX squid_mesh_runs_idempotency
    ON squid_mesh_runs (workflow, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Newest-first listings page through this index instead of sorting the whole table.
CREATE INDEX squid_mesh_runs_created ON squid_mesh_runs (created_at, run_id);

CREATE TABLE squid_mesh_attempts (
    run_id      TEXT NOT NULL REFERENCES squid_mesh_runs (run_id),
    key         TEXT NOT NULL,
    step        TEXT NOT NULL,
    visit       INTEGER NOT NULL,
    number      INTEGER NOT NULL,
    queue       TEXT NOT NULL,
    -- workflow@version: a worker only claims attempts of definitions it has loaded.
    wf_key      TEXT NOT NULL,
    status      TEXT NOT NULL,
    input       TEXT NOT NULL,
    visible_at  REAL NOT NULL,
    -- When the attempt may be claimed: visible_at while scheduled, lease expiry while running,
    -- NULL once finished. Finished attempts therefore leave the claim index.
    due_at      REAL,
    priority    INTEGER NOT NULL DEFAULT 0,
    claim_hash  TEXT,
    owner       TEXT,
    lease_until REAL,
    claims      INTEGER NOT NULL,
    started_at  REAL,
    finished_at REAL,
    output      TEXT,
    error       TEXT,
    PRIMARY KEY (run_id, key)
);

-- The claim index holds live attempts only: its size follows live work, not history.
CREATE INDEX squid_mesh_attempts_due
    ON squid_mesh_attempts (queue, priority DESC, due_at) WHERE due_at IS NOT NULL;

CREATE TABLE squid_mesh_facts (
    run_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    at     REAL NOT NULL,
    data   TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
