-- squid-mesh schema, version 0007: the definitions processes have registered.
--
-- One row per (workflow, version): the fingerprint first registered for it. A process that
-- registers the same version with another fingerprint changed the code without changing the
-- version, which squid-mesh reports (a warning, or an error in strict mode).

CREATE TABLE squid_mesh_definitions (
    workflow      TEXT NOT NULL,
    version       TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    registered_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (workflow, version)
);
