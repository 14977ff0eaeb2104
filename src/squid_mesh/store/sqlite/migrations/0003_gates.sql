-- squid-mesh schema, version 0003: pause and approval gates, manual command keys.
--
-- gate: the gate a paused run waits at (JSON: step, kind, attempt key, targets, output key, since),
-- NULL while the run is not paused. command_keys: the idempotency keys of the manual commands the
-- run has received (JSON object key -> command), so a repeated command is answered, not applied.

ALTER TABLE squid_mesh_runs ADD COLUMN gate TEXT;

ALTER TABLE squid_mesh_runs ADD COLUMN command_keys TEXT NOT NULL DEFAULT '{}';

-- Runs from before this version: the keys of the manual commands they received, from the journal.
UPDATE squid_mesh_runs
   SET command_keys = (
       SELECT json_group_object(json_extract(f.data, '$.idempotency_key'),
                                json_extract(f.data, '$.command'))
         FROM squid_mesh_facts f
        WHERE f.run_id = squid_mesh_runs.run_id
          AND f.kind = 'command_received'
          AND json_extract(f.data, '$.command') IN ('cancel', 'resume', 'approve', 'reject')
          AND json_extract(f.data, '$.idempotency_key') IS NOT NULL)
 WHERE EXISTS (
       SELECT 1 FROM squid_mesh_facts f
        WHERE f.run_id = squid_mesh_runs.run_id
          AND f.kind = 'command_received'
          AND json_extract(f.data, '$.command') IN ('cancel', 'resume', 'approve', 'reject')
          AND json_extract(f.data, '$.idempotency_key') IS NOT NULL);
