-- squid-mesh schema, version 0004: child runs.
--
-- parent: a child run's parent (JSON: run_id, step, child_key), NULL for a top-level run.
-- parent_id repeats the parent's run id as a plain column so a run's children are found through
-- an index that holds child runs only.

ALTER TABLE squid_mesh_runs ADD COLUMN parent TEXT;

ALTER TABLE squid_mesh_runs ADD COLUMN parent_id TEXT;

CREATE INDEX squid_mesh_runs_parent
    ON squid_mesh_runs (parent_id, created_at, run_id) WHERE parent_id IS NOT NULL;
