-- squid-mesh schema, version 0006: replays.
--
-- replayed_from: the finished run a run replays (mesh.replay). The source run is never written
-- again (finished runs do not change); its replays are found through this index.

ALTER TABLE squid_mesh_runs ADD COLUMN replayed_from TEXT;

CREATE INDEX squid_mesh_runs_replayed_from
    ON squid_mesh_runs (replayed_from, created_at, run_id) WHERE replayed_from IS NOT NULL;
