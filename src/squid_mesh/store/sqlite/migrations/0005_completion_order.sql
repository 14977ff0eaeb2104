-- squid-mesh schema, version 0005: the order in which attempts finished.
--
-- finished_rev: the journal seq of the fact that finished the attempt. Compensations undo steps in
-- reverse completion order, and two steps can finish within one clock tick: times alone cannot
-- order them, the journal can.

ALTER TABLE squid_mesh_attempts ADD COLUMN finished_rev INTEGER;
