-- squid-mesh schema, version 0005: the order in which attempts finished.
--
-- finished_rev: the journal seq of the fact that finished the attempt. Compensations undo steps in
-- reverse completion order, and two steps can finish within one clock tick: times alone cannot
-- order them, the journal can.

ALTER TABLE squid_mesh_attempts ADD COLUMN finished_rev INTEGER;

-- Attempts finished before this version: their position, from the journal.
UPDATE squid_mesh_attempts
   SET finished_rev = (
       SELECT max(f.seq) FROM squid_mesh_facts f
        WHERE f.run_id = squid_mesh_attempts.run_id
          AND f.kind IN ('attempt_completed', 'attempt_failed', 'result_discarded')
          AND json_extract(f.data, '$.key') = squid_mesh_attempts.key)
 WHERE status IN ('completed', 'failed', 'discarded') AND finished_rev IS NULL;
