-- squid-mesh schema, version 0009: repeated commands.
--
-- A command repeated with an idempotency key the run already has (a retried HTTP request, a
-- double click) changes nothing in the run and appends nothing to its journal; it is counted here,
-- beside the journal, so an operator can see that it happened and how often.

CREATE TABLE squid_mesh_command_repeats (
    run_id          TEXT NOT NULL,
    command         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    repeats         INTEGER NOT NULL,
    last_at         DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, command, idempotency_key)
);
