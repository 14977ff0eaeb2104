-- squid-mesh schema, version 0003: pause and approval gates, manual command keys.
--
-- gate: the gate a paused run waits at (JSON: step, kind, attempt key, targets, output key, since),
-- NULL while the run is not paused. command_keys: the idempotency keys of the manual commands the
-- run has received (JSON object key -> command), so a repeated command is answered, not applied.

ALTER TABLE squid_mesh_runs ADD COLUMN gate TEXT;

ALTER TABLE squid_mesh_runs ADD COLUMN command_keys TEXT NOT NULL DEFAULT '{}';

-- Runs from before this version: the keys of the manual commands they received, from the journal.
UPDATE squid_mesh_runs r
   SET command_keys = k.keys
  FROM (SELECT f.run_id,
               json_object_agg(f.data::json ->> 'idempotency_key',
                               f.data::json ->> 'command')::text AS keys
          FROM squid_mesh_facts f
         WHERE f.kind = 'command_received'
           AND f.data::json ->> 'command' IN ('cancel', 'resume', 'approve', 'reject')
           AND f.data::json ->> 'idempotency_key' IS NOT NULL
         GROUP BY f.run_id) k
 WHERE r.run_id = k.run_id;
