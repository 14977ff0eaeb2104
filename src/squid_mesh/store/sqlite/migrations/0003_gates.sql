-- squid-mesh schema, version 0003: pause and approval gates, manual command keys.
--
-- gate: the gate a paused run waits at (JSON: step, kind, attempt key, targets, output key, since),
-- NULL while the run is not paused. command_keys: the idempotency keys of the manual commands the
-- run has received (JSON object key -> command), so a repeated command is answered, not applied.

ALTER TABLE squid_mesh_runs ADD COLUMN gate TEXT;

ALTER TABLE squid_mesh_runs ADD COLUMN command_keys TEXT NOT NULL DEFAULT '{}';
