-- squid-mesh schema, version 0002: indexes for listing runs newest first.
--
-- list_runs pages through one of these backwards, (created_at, run_id) being the cursor: a page
-- reads `limit` index entries whatever the size of the history. Each index leads with the filter
-- it serves; a listing with several filters walks the most specific one and checks the rest.
-- run_counts for one workflow reads only that workflow's entries of the (workflow, status) index.

CREATE INDEX squid_mesh_runs_workflow_created ON squid_mesh_runs (workflow, created_at, run_id);

CREATE INDEX squid_mesh_runs_workflow_status_created
    ON squid_mesh_runs (workflow, status, created_at, run_id);

CREATE INDEX squid_mesh_runs_status_created ON squid_mesh_runs (status, created_at, run_id);

CREATE INDEX squid_mesh_runs_queue_created ON squid_mesh_runs (queue, created_at, run_id);
