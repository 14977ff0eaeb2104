-- squid-mesh named queries, PostgreSQL.
--
-- Every statement the Postgres store runs is here, under a `-- name:` line; the Python side refers
-- to them by name only. Parameters are `%(name)s`. Transactions run at READ COMMITTED.
--
-- Lock discipline: the run row guards the run and all its attempts. Every writer locks the run row
-- first (load_run_for_update, or next_claimable's FOR UPDATE OF r SKIP LOCKED) and only then touches
-- attempts, so two writers never wait on each other in opposite orders (no deadlock), and a claim
-- never waits at all: a run busy in another transaction is skipped.

-- name: load_run
SELECT run_id, workflow, version, fingerprint, queue, trigger, status, payload, context, error,
       idempotency_key, payload_hash, rev, created_at, updated_at
  FROM squid_mesh_runs
 WHERE run_id = %(run_id)s;

-- name: load_run_for_update
SELECT run_id, workflow, version, fingerprint, queue, trigger, status, payload, context, error,
       idempotency_key, payload_hash, rev, created_at, updated_at
  FROM squid_mesh_runs
 WHERE run_id = %(run_id)s
   FOR UPDATE;

-- name: load_attempts
SELECT key, step, visit, number, queue, status, input, visible_at, claim_hash, owner, lease_until,
       claims, started_at, finished_at, output, error
  FROM squid_mesh_attempts
 WHERE run_id = %(run_id)s;

-- name: run_id_for_key
SELECT run_id FROM squid_mesh_runs
 WHERE workflow = %(workflow)s AND idempotency_key = %(idempotency_key)s;

-- name: insert_run
-- DO NOTHING on any unique conflict (run id or idempotency key). A concurrent insert of the same key
-- makes this statement wait for the other transaction, so the engine then reads a committed winner.
INSERT INTO squid_mesh_runs (run_id, workflow, version, fingerprint, queue, trigger, status, payload,
                             context, error, idempotency_key, payload_hash, rev, created_at,
                             updated_at)
VALUES (%(run_id)s, %(workflow)s, %(version)s, %(fingerprint)s, %(queue)s, %(trigger)s, %(status)s,
        %(payload)s, %(context)s, %(error)s, %(idempotency_key)s, %(payload_hash)s, %(rev)s,
        %(created_at)s, %(updated_at)s)
ON CONFLICT DO NOTHING
RETURNING run_id;

-- name: update_run
-- Guarded by the revision the command read. The journal's primary key is the guard that fails a
-- lost race: the loser's first fact repeats an existing (run_id, seq).
UPDATE squid_mesh_runs
   SET status = %(status)s, context = %(context)s, error = %(error)s, rev = %(rev)s,
       updated_at = %(updated_at)s
 WHERE run_id = %(run_id)s AND rev = %(expected_rev)s;

-- name: upsert_attempt
INSERT INTO squid_mesh_attempts (run_id, key, step, visit, number, queue, wf_key, status, input,
                                 visible_at, due_at, claim_hash, owner, lease_until, claims,
                                 started_at, finished_at, output, error)
VALUES (%(run_id)s, %(key)s, %(step)s, %(visit)s, %(number)s, %(queue)s, %(wf_key)s, %(status)s,
        %(input)s, %(visible_at)s, %(due_at)s, %(claim_hash)s, %(owner)s, %(lease_until)s,
        %(claims)s, %(started_at)s, %(finished_at)s, %(output)s, %(error)s)
ON CONFLICT (run_id, key) DO UPDATE
   SET status = excluded.status, due_at = excluded.due_at, claim_hash = excluded.claim_hash,
       owner = excluded.owner, lease_until = excluded.lease_until, claims = excluded.claims,
       started_at = excluded.started_at, finished_at = excluded.finished_at,
       output = excluded.output, error = excluded.error;

-- name: insert_fact
INSERT INTO squid_mesh_facts (run_id, seq, kind, at, data)
VALUES (%(run_id)s, %(seq)s, %(kind)s, %(at)s, %(data)s);

-- name: load_facts
SELECT seq, kind, at, data FROM squid_mesh_facts WHERE run_id = %(run_id)s ORDER BY seq;

-- name: next_claimable
-- Walks the partial index squid_mesh_attempts_due in claim order (priority, then earliest due) and
-- locks the run row of the first candidate whose run no other transaction holds. Attempts of
-- definitions this worker has not loaded are passed over, never claimed.
SELECT a.run_id, a.key
  FROM squid_mesh_attempts a
  JOIN squid_mesh_runs r ON r.run_id = a.run_id
 WHERE a.queue = %(queue)s
   AND a.due_at IS NOT NULL
   AND a.due_at <= %(now)s
   AND a.wf_key = ANY(%(wf_keys)s)
 ORDER BY a.priority DESC, a.due_at
 LIMIT 1
   FOR UPDATE OF r SKIP LOCKED;

-- name: run_ids_page
SELECT run_id FROM squid_mesh_runs WHERE run_id > %(after)s ORDER BY run_id LIMIT %(limit)s;

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS squid_mesh_migrations (
    version    TEXT PRIMARY KEY,
    applied_at DOUBLE PRECISION NOT NULL
);

-- name: lock_migrations
-- Transaction-scoped advisory lock: concurrent migrators queue here, and the lock is released at
-- commit. The key is an arbitrary constant that names squid-mesh's migrations.
SELECT pg_advisory_xact_lock(7353474251928313437);

-- name: applied_migrations
SELECT version FROM squid_mesh_migrations ORDER BY version;

-- name: record_migration
INSERT INTO squid_mesh_migrations (version, applied_at) VALUES (%(version)s, %(applied_at)s);
