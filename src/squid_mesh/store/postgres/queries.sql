-- squid-mesh named queries, PostgreSQL.
--
-- Every statement the Postgres store runs is here, under a `-- name:` line; the Python side refers
-- to them by name only. Parameters are `%(name)s`. Transactions run at READ COMMITTED.
--
-- squid-mesh's connections run with enable_sort and enable_bitmapscan off (see PostgresStore): each
-- query below is meant to walk an index in order, whatever the table's statistics say.
--
-- Round trips, not statements, are what a command costs here: load_run brings a run with its
-- attempts, and insert_run / save_run write a command's facts and projection rows in one statement.
--
-- Lock discipline: the run row guards the run and all its attempts. Every writer locks the run row
-- first (load_run_for_update, or next_claimable's FOR UPDATE OF r SKIP LOCKED) and only then touches
-- attempts, so two writers of one run never wait on each other in opposite orders, and a claim
-- never waits at all: a run busy in another transaction is skipped. Writes that reach a second run
-- are the exception: a child that ends locks its parent after itself, while a cancel locks the
-- parent before its children. Should the two meet, PostgreSQL reports a deadlock after
-- deadlock_timeout (1 s by default), one of them is retried, and both end correctly.

-- name: load_run
-- The run row and all its attempts in one round trip; attempts come as a JSON array of arrays in
-- load_attempts column order (float8 prints its shortest exact form, so times survive JSON).
SELECT r.run_id, r.workflow, r.version, r.fingerprint, r.queue, r.trigger, r.status, r.payload,
       r.context, r.error, r.idempotency_key, r.payload_hash, r.rev, r.created_at, r.updated_at,
       r.gate, r.command_keys, r.parent, r.replayed_from, r.priority, r.trace,
       (SELECT coalesce(json_agg(json_build_array(
                   a.key, a.step, a.visit, a.number, a.queue, a.status, a.input::json, a.visible_at,
                   a.claim_hash, a.owner, a.lease_until, a.claims, a.started_at, a.finished_at,
                   a.output::json, a.error::json, a.finished_rev)), '[]')::text
          FROM squid_mesh_attempts a
         WHERE a.run_id = r.run_id) AS attempts
  FROM squid_mesh_runs r
 WHERE r.run_id = %(run_id)s;

-- name: load_run_for_update
-- As load_run, and the run row stays locked until commit: this is the lock every writer takes.
-- Beware READ COMMITTED: when the row was changed by a transaction that committed after this
-- statement's snapshot (it waited for the lock, or the commit came just before), FOR UPDATE
-- returns the row's newest version while the attempts subquery still reads the older snapshot:
-- a run at revision 7 with attempts of revision 5. The last column, the newest journal seq in the
-- snapshot, exposes that: when it differs from rev, the store reads again (the lock is then held,
-- so the second read is consistent).
SELECT r.run_id, r.workflow, r.version, r.fingerprint, r.queue, r.trigger, r.status, r.payload,
       r.context, r.error, r.idempotency_key, r.payload_hash, r.rev, r.created_at, r.updated_at,
       r.gate, r.command_keys, r.parent, r.replayed_from, r.priority, r.trace,
       (SELECT coalesce(json_agg(json_build_array(
                   a.key, a.step, a.visit, a.number, a.queue, a.status, a.input::json, a.visible_at,
                   a.claim_hash, a.owner, a.lease_until, a.claims, a.started_at, a.finished_at,
                   a.output::json, a.error::json, a.finished_rev)), '[]')::text
          FROM squid_mesh_attempts a
         WHERE a.run_id = r.run_id) AS attempts,
       (SELECT max(f.seq) FROM squid_mesh_facts f WHERE f.run_id = r.run_id) AS snapshot_rev
  FROM squid_mesh_runs r
 WHERE r.run_id = %(run_id)s
   FOR UPDATE OF r;

-- name: run_id_for_key
SELECT run_id FROM squid_mesh_runs
 WHERE workflow = %(workflow)s AND idempotency_key = %(idempotency_key)s;

-- name: insert_run
-- A whole new run in one statement: the run row, its facts and its attempts. DO NOTHING on any
-- unique conflict (run id or idempotency key; a concurrent insert of the same key waits for the
-- other transaction): then nothing else is written and no row comes back, and the engine reads
-- the winner. Facts and attempts arrive as JSON arrays of records (see save_run).
WITH run AS (
    INSERT INTO squid_mesh_runs (run_id, workflow, version, fingerprint, queue, trigger, status,
                                 payload, context, error, idempotency_key, payload_hash, rev,
                                 created_at, updated_at, gate, command_keys, parent,
                                 parent_id, replayed_from, priority, trace)
    VALUES (%(run_id)s, %(workflow)s, %(version)s, %(fingerprint)s, %(queue)s, %(trigger)s,
            %(status)s, %(payload)s, %(context)s, %(error)s, %(idempotency_key)s,
            %(payload_hash)s, %(rev)s, %(created_at)s, %(updated_at)s, %(gate)s,
            %(command_keys)s, %(parent)s, %(parent_id)s, %(replayed_from)s, %(priority)s, %(trace)s)
    ON CONFLICT DO NOTHING
    RETURNING run_id
), facts AS (
    INSERT INTO squid_mesh_facts (run_id, seq, kind, at, data)
    SELECT run.run_id, f.seq, f.kind, f.at, f.data
      FROM run, json_to_recordset(%(facts)s::json)
           AS f(seq integer, kind text, at double precision, data text)
), attempts AS (
    INSERT INTO squid_mesh_attempts (run_id, key, step, visit, number, queue, wf_key, status,
                                     input, visible_at, due_at, claim_hash, owner, lease_until,
                                     claims, started_at, finished_at, output, error,
                                     finished_rev, priority)
    SELECT run.run_id, a.key, a.step, a.visit, a.number, a.queue, a.wf_key, a.status, a.input,
           a.visible_at, a.due_at, a.claim_hash, a.owner, a.lease_until, a.claims, a.started_at,
           a.finished_at, a.output, a.error, a.finished_rev, a.priority
      FROM run, json_to_recordset(%(attempts)s::json)
           AS a(key text, step text, visit integer, number integer, queue text, wf_key text,
                status text, input text, visible_at double precision, due_at double precision,
                claim_hash text, owner text, lease_until double precision, claims integer,
                started_at double precision, finished_at double precision, output text,
                error text, finished_rev integer, priority integer)
    RETURNING queue, status
)
SELECT run_id, (SELECT count(pg_notify('squid_mesh', q.queue))
          FROM (SELECT DISTINCT queue FROM attempts WHERE status = 'scheduled') q)
  FROM run;

-- name: save_run
-- One command's whole write in one statement (one round trip, and a transaction of its own when
-- sent outside one): move the run row to its new revision, append the facts, upsert the attempts
-- that changed. The facts and attempts are inserted FROM the run update's result, so the run row
-- is locked first, as every other writer locks it first (no deadlock), and nothing is written
-- when the revision guard matches no row (another writer moved the run on): the statement then
-- returns 0 and the store reports a Conflict. The journal's (run_id, seq) key guards as well.
-- Each queue that gains a claimable (scheduled) attempt is announced on channel squid_mesh, as in
-- insert_run: idle workers LISTEN there and claim at once. PostgreSQL delivers the notification at
-- commit and not at all on rollback; a claimed (running) attempt announces nothing.
WITH run AS (
    UPDATE squid_mesh_runs
       SET version = %(version)s, fingerprint = %(fingerprint)s, status = %(status)s,
           context = %(context)s, error = %(error)s, rev = %(rev)s, updated_at = %(updated_at)s,
           gate = %(gate)s, command_keys = %(command_keys)s
     WHERE run_id = %(run_id)s AND rev = %(expected_rev)s
    RETURNING run_id
), facts AS (
    INSERT INTO squid_mesh_facts (run_id, seq, kind, at, data)
    SELECT run.run_id, f.seq, f.kind, f.at, f.data
      FROM run, json_to_recordset(%(facts)s::json)
           AS f(seq integer, kind text, at double precision, data text)
), attempts AS (
    INSERT INTO squid_mesh_attempts (run_id, key, step, visit, number, queue, wf_key, status,
                                     input, visible_at, due_at, claim_hash, owner, lease_until,
                                     claims, started_at, finished_at, output, error,
                                     finished_rev, priority)
    SELECT run.run_id, a.key, a.step, a.visit, a.number, a.queue, a.wf_key, a.status, a.input,
           a.visible_at, a.due_at, a.claim_hash, a.owner, a.lease_until, a.claims, a.started_at,
           a.finished_at, a.output, a.error, a.finished_rev, a.priority
      FROM run, json_to_recordset(%(attempts)s::json)
           AS a(key text, step text, visit integer, number integer, queue text, wf_key text,
                status text, input text, visible_at double precision, due_at double precision,
                claim_hash text, owner text, lease_until double precision, claims integer,
                started_at double precision, finished_at double precision, output text,
                error text, finished_rev integer, priority integer)
    ON CONFLICT (run_id, key) DO UPDATE
       SET wf_key = excluded.wf_key, status = excluded.status, visible_at = excluded.visible_at,
       due_at = excluded.due_at,
       claim_hash = excluded.claim_hash,
           owner = excluded.owner, lease_until = excluded.lease_until, claims = excluded.claims,
           started_at = excluded.started_at, finished_at = excluded.finished_at,
           output = excluded.output, error = excluded.error,
           finished_rev = excluded.finished_rev
    RETURNING queue, status
)
SELECT (SELECT count(*) FROM run), (SELECT count(pg_notify('squid_mesh', q.queue))
          FROM (SELECT DISTINCT queue FROM attempts WHERE status = 'scheduled') q);

-- name: load_facts
SELECT seq, kind, at, data FROM squid_mesh_facts WHERE run_id = %(run_id)s ORDER BY seq;

-- name: probe_due
-- The idle poller's probe, sent on its own (no transaction): is any attempt of this queue due?
-- A plain read: it locks nothing, so it takes no transaction id and has no commit to flush to
-- disk (locking the candidate's row, as a claim does, made each probe cost a WAL flush: 0.41 ms
-- against 0.15 ms). A due attempt whose run another worker holds still counts; the claim decides.
SELECT 1
  FROM squid_mesh_attempts a
 WHERE a.queue = %(queue)s
   AND a.due_at IS NOT NULL
   AND a.due_at <= %(now)s
   AND a.wf_key = ANY(%(wf_keys)s)
 LIMIT 1;

-- name: next_claimable_run
-- Claim order: the partial index squid_mesh_attempts_due walked by priority, then earliest due;
-- the candidate's run row is locked, and runs another transaction holds are skipped (never
-- waited for); attempts of definitions this worker has not loaded are passed over, never claimed.
-- The candidate and its run (load_run_for_update) come back in one round trip: the candidate's key, then its run row
-- and attempts. The outer SELECT reads the statement's snapshot, which can predate the lock taken
-- in the CTE; a run changed in that instant is then decided on stale, and its write is refused
-- by the journal's (run_id, seq) key and retried (see save_run).
WITH candidate AS (
    SELECT a.run_id, a.key
      FROM squid_mesh_attempts a
      JOIN squid_mesh_runs r ON r.run_id = a.run_id
     WHERE a.queue = %(queue)s
       AND a.due_at IS NOT NULL
       AND a.due_at <= %(now)s
       AND a.wf_key = ANY(%(wf_keys)s)
     ORDER BY a.priority DESC, a.due_at
     LIMIT 1
       FOR UPDATE OF r SKIP LOCKED
)
SELECT c.key, r.run_id, r.workflow, r.version, r.fingerprint, r.queue, r.trigger, r.status,
       r.payload, r.context, r.error, r.idempotency_key, r.payload_hash, r.rev, r.created_at,
       r.updated_at, r.gate, r.command_keys, r.parent, r.replayed_from, r.priority, r.trace,
       (SELECT coalesce(json_agg(json_build_array(
                   a.key, a.step, a.visit, a.number, a.queue, a.status, a.input::json, a.visible_at,
                   a.claim_hash, a.owner, a.lease_until, a.claims, a.started_at, a.finished_at,
                   a.output::json, a.error::json, a.finished_rev)), '[]')::text
          FROM squid_mesh_attempts a
         WHERE a.run_id = r.run_id) AS attempts
  FROM candidate c
  JOIN squid_mesh_runs r ON r.run_id = c.run_id;

-- name: list_runs
-- Newest first. The store puts the filter_* fragments for the filters given where /* filters */
-- stands; each filter has an index that leads with it and ends (created_at, run_id) (migration
-- 0002), so a page is a backward walk of `limit` entries of one index, and the cursor (the last
-- row's created_at and run_id) starts the next page exactly where this one ended.
SELECT run_id, workflow, version, status, queue, trigger, created_at, updated_at
  FROM squid_mesh_runs
 WHERE TRUE /* filters */
 ORDER BY created_at DESC, run_id DESC
 LIMIT %(limit)s;

-- name: run_counts
-- Runs per status. With a workflow filter it reads that workflow's part of the (workflow, status,
-- ...) index only; without one it counts the whole table (an operator's occasional question).
SELECT status, count(*)
  FROM squid_mesh_runs
 WHERE TRUE /* filters */
 GROUP BY status;

-- name: filter_workflow
AND workflow = %(workflow)s

-- name: filter_status
AND status = %(status)s

-- name: filter_queue
AND queue = %(queue)s

-- name: filter_started_after
AND created_at > %(started_after)s

-- name: filter_before
-- The cursor: rows strictly after the previous page's last row in newest-first order.
AND (created_at, run_id) < (%(before_at)s, %(before_id)s)

-- name: children
-- A run's child runs in the order they were started (the partial index of migration 0004).
SELECT run_id, workflow, status, parent, context, error
  FROM squid_mesh_runs
 WHERE parent_id = %(parent_id)s
 ORDER BY created_at, run_id;

-- name: savepoint
-- Around a transactional step: its own writes can be undone without losing the transaction.
SAVEPOINT squid_mesh_step;

-- name: release_savepoint
RELEASE SAVEPOINT squid_mesh_step;

-- name: rollback_to_savepoint
ROLLBACK TO SAVEPOINT squid_mesh_step;

-- name: replays
-- The runs that replay a run, oldest first (the partial index of migration 0006).
SELECT run_id FROM squid_mesh_runs
 WHERE replayed_from = %(run_id)s
 ORDER BY created_at, run_id;

-- name: has_definitions_table
-- Whether migration 0007 ran (a process may connect before the host migrates).
SELECT 1 WHERE to_regclass('squid_mesh_definitions') IS NOT NULL;

-- name: register_definition
-- The first registration of a (workflow, version) wins; later ones only read it back.
INSERT INTO squid_mesh_definitions (workflow, version, fingerprint, registered_at)
VALUES (%(workflow)s, %(version)s, %(fingerprint)s, %(registered_at)s)
ON CONFLICT (workflow, version) DO NOTHING;

-- name: recorded_fingerprint
SELECT fingerprint FROM squid_mesh_definitions
 WHERE workflow = %(workflow)s AND version = %(version)s;

-- name: init_schedule
-- A trigger seen for the first time starts from now: no backfill from the beginning of time.
INSERT INTO squid_mesh_schedules (workflow, trigger, last_slot)
VALUES (%(workflow)s, %(trigger)s, %(now)s)
ON CONFLICT (workflow, trigger) DO NOTHING;

-- name: schedule_last_slot
SELECT last_slot FROM squid_mesh_schedules
 WHERE workflow = %(workflow)s AND trigger = %(trigger)s;

-- name: advance_schedule
-- Only forwards: a slow tick that finishes after a faster one never moves the schedule back.
UPDATE squid_mesh_schedules
   SET last_slot = %(slot)s
 WHERE workflow = %(workflow)s AND trigger = %(trigger)s AND last_slot < %(slot)s;

-- name: count_repeat
INSERT INTO squid_mesh_command_repeats (run_id, command, idempotency_key, repeats, last_at)
VALUES (%(run_id)s, %(command)s, %(idempotency_key)s, 1, %(now)s)
ON CONFLICT (run_id, command, idempotency_key) DO UPDATE
   SET repeats = squid_mesh_command_repeats.repeats + 1, last_at = excluded.last_at;

-- name: command_facts
-- The run's receipts (a few rows; the scan is bounded by the run's own journal).
SELECT seq, kind, at, data FROM squid_mesh_facts
 WHERE run_id = %(run_id)s AND kind = 'command_received'
 ORDER BY seq;

-- name: command_repeats
SELECT command, idempotency_key, repeats FROM squid_mesh_command_repeats
 WHERE run_id = %(run_id)s;

-- name: purgeable_runs
-- Finished runs not changed since a time, oldest first (an operator's occasional clean-up: it reads
-- the runs table, there is no index on updated_at).
SELECT run_id FROM squid_mesh_runs
 WHERE status IN ('completed', 'failed', 'cancelled') AND updated_at < %(before)s
 ORDER BY updated_at
 LIMIT %(limit)s;

-- name: purge_facts
DELETE FROM squid_mesh_facts WHERE run_id = %(run_id)s;

-- name: purge_attempts
DELETE FROM squid_mesh_attempts WHERE run_id = %(run_id)s;

-- name: purge_repeats
DELETE FROM squid_mesh_command_repeats WHERE run_id = %(run_id)s;

-- name: purge_run
DELETE FROM squid_mesh_runs WHERE run_id = %(run_id)s;

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

-- name: next_due
-- When the next attempt of this queue is due (now or later), walking squid_mesh_attempts_next in
-- due order: an idle worker's probe and its alarm clock in one plain read.
SELECT due_at
  FROM squid_mesh_attempts
 WHERE queue = %(queue)s
   AND due_at IS NOT NULL
   AND wf_key = ANY(%(wf_keys)s)
 ORDER BY due_at
 LIMIT 1;

-- name: queue_limits
SELECT queue, concurrency, rate_limit, rate_period FROM squid_mesh_queues ORDER BY queue;

-- name: lock_queue
-- Every claim of a limited queue locks its row first and holds it to commit, so the claims of
-- one queue happen one at a time across all workers (see count_claimed).
SELECT concurrency, rate_limit, rate_period, tokens, refilled_at
  FROM squid_mesh_queues
 WHERE queue = %(queue)s
   FOR UPDATE;

-- name: peek_queue
-- A limited queue's row as it is, for explain_run: no lock, so it never waits for a claim.
SELECT concurrency, rate_limit, rate_period, tokens, refilled_at
  FROM squid_mesh_queues
 WHERE queue = %(queue)s;

-- name: count_claimed
-- Sent after lock_queue, as its own statement: at READ COMMITTED it reads a snapshot taken after
-- the lock was granted, so it sees the claim committed by whoever held the lock before.
SELECT count(*)
  FROM squid_mesh_attempts
 WHERE queue = %(queue)s AND status = 'running' AND due_at > %(now)s;

-- name: take_token
-- refilled_at never goes back: a worker whose clock lags must not get the same time credited twice.
UPDATE squid_mesh_queues
   SET tokens = %(tokens)s, refilled_at = GREATEST(coalesce(refilled_at, %(now)s), %(now)s)
 WHERE queue = %(queue)s;

-- name: put_queue_limits
-- A new or changed rate limit starts with a full bucket.
INSERT INTO squid_mesh_queues (queue, concurrency, rate_limit, rate_period, tokens, refilled_at,
                               updated_at)
VALUES (%(queue)s, %(concurrency)s, %(rate_limit)s::integer, %(rate_period)s,
        %(rate_limit)s::double precision, %(now)s, %(now)s)
ON CONFLICT (queue) DO UPDATE
   SET concurrency = excluded.concurrency, rate_limit = excluded.rate_limit,
       rate_period = excluded.rate_period,
       -- The same rate again (a deploy re-applying its settings) keeps the bucket as it is.
       tokens = CASE WHEN squid_mesh_queues.rate_limit IS NOT DISTINCT FROM excluded.rate_limit AND squid_mesh_queues.rate_period IS NOT DISTINCT FROM excluded.rate_period
                     THEN squid_mesh_queues.tokens ELSE excluded.tokens END,
       refilled_at = CASE WHEN squid_mesh_queues.rate_limit IS NOT DISTINCT FROM excluded.rate_limit AND squid_mesh_queues.rate_period IS NOT DISTINCT FROM excluded.rate_period
                          THEN squid_mesh_queues.refilled_at ELSE excluded.refilled_at END,
       updated_at = excluded.updated_at;

-- name: delete_queue_limits
DELETE FROM squid_mesh_queues WHERE queue = %(queue)s;

-- name: queue_counts
-- Unfinished attempts per queue, for gauges and operators: visible (due now, claimable, expired
-- leases included), claimed (lease holding), scheduled (due later), and expired (the part of
-- visible whose lease ran out: a worker died or stalled). Reads every live attempt.
SELECT queue,
       count(*) FILTER (WHERE due_at <= %(now)s),
       count(*) FILTER (WHERE due_at > %(now)s AND status = 'running'),
       count(*) FILTER (WHERE due_at > %(now)s AND status <> 'running'),
       count(*) FILTER (WHERE due_at <= %(now)s AND status = 'running')
  FROM squid_mesh_attempts
 WHERE due_at IS NOT NULL
 GROUP BY queue;

-- name: live_claims
-- Who holds claims now, per queue: workers are seen through their leases (an idle worker leaves
-- no row behind). The latest lease expiry shows the last heartbeat. Reads every live attempt.
SELECT owner, queue, count(*), max(lease_until),
       count(*) FILTER (WHERE lease_until <= %(now)s)
  FROM squid_mesh_attempts
 WHERE due_at IS NOT NULL AND status = 'running' AND owner IS NOT NULL
 GROUP BY owner, queue
 ORDER BY owner, queue;

-- name: schedule_slots
SELECT workflow, trigger, last_slot FROM squid_mesh_schedules;

-- The Django store (store/django_db.py) borrows Django's connections, whose session settings
-- belong to the host: squid-mesh's planner settings apply per transaction instead, and a
-- transactional step's own queries run with the host's.

-- name: planner_for_squid_mesh
SELECT set_config('enable_sort', 'off', true), set_config('enable_bitmapscan', 'off', true);

-- name: planner_for_host
SELECT set_config(name, reset_val, true) FROM pg_settings
 WHERE name IN ('enable_sort', 'enable_bitmapscan');

-- name: begin_snapshot
-- A read transaction begun on a borrowed connection in autocommit mode.
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;

-- name: end_snapshot
COMMIT;

-- name: abort_snapshot
ROLLBACK;
