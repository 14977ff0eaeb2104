-- squid-mesh schema, version 0008: cron schedules.
--
-- One row per (workflow, cron trigger): the latest slot a tick has handled. Ticks start the runs
-- of the slots after it; each run's idempotency key names its slot, so two processes ticking at
-- once start each slot's run exactly once whatever this row says.

CREATE TABLE squid_mesh_schedules (
    workflow  TEXT NOT NULL,
    trigger   TEXT NOT NULL,
    last_slot DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (workflow, trigger)
);
