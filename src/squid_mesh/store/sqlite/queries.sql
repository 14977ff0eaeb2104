-- squid-mesh named queries, SQLite.
--
-- Every statement the SQLite store runs is here, under a `-- name:` line; the Python side refers to
-- them by name only. Parameters are `:name`. Writers run inside `BEGIN IMMEDIATE`, which takes the
-- database's write lock up front: two processes never interleave a read-decide-write, so the
-- `rev` guard in update_run is a second line of defence here, not the concurrency control.

-- name: load_run
SELECT run_id, workflow, version, fingerprint, queue, trigger, status, payload, context, error,
       idempotency_key, payload_hash, rev, created_at, updated_at, gate, command_keys,
       parent, replayed_from, priority, trace
  FROM squid_mesh_runs
 WHERE run_id = :run_id;

-- name: load_run_for_update
-- The IMMEDIATE transaction already holds the write lock: no row lock exists or is needed.
SELECT run_id, workflow, version, fingerprint, queue, trigger, status, payload, context, error,
       idempotency_key, payload_hash, rev, created_at, updated_at, gate, command_keys,
       parent, replayed_from, priority, trace
  FROM squid_mesh_runs
 WHERE run_id = :run_id;

-- name: load_attempts
SELECT key, step, visit, number, queue, status, input, visible_at, claim_hash, owner, lease_until,
       claims, started_at, finished_at, output, error, finished_rev
  FROM squid_mesh_attempts
 WHERE run_id = :run_id;

-- name: run_id_for_key
SELECT run_id FROM squid_mesh_runs WHERE workflow = :workflow AND idempotency_key = :idempotency_key;

-- name: insert_run
-- DO NOTHING on any unique conflict (run id or idempotency key): the engine then reads the winner.
INSERT INTO squid_mesh_runs (run_id, workflow, version, fingerprint, queue, trigger, status, payload,
                             context, error, idempotency_key, payload_hash, rev, created_at,
                             updated_at, gate, command_keys, parent, parent_id, replayed_from, priority, trace)
VALUES (:run_id, :workflow, :version, :fingerprint, :queue, :trigger, :status, :payload, :context,
        :error, :idempotency_key, :payload_hash, :rev, :created_at, :updated_at, :gate,
        :command_keys, :parent, :parent_id, :replayed_from, :priority, :trace)
ON CONFLICT DO NOTHING
RETURNING run_id;

-- name: update_run
-- Guarded by the revision the command read. The journal's primary key is the guard that fails a
-- lost race: the loser's first fact repeats an existing (run_id, seq).
UPDATE squid_mesh_runs
   SET version = :version, fingerprint = :fingerprint, status = :status, context = :context,
       error = :error, rev = :rev, updated_at = :updated_at, gate = :gate,
       command_keys = :command_keys
 WHERE run_id = :run_id AND rev = :expected_rev;

-- name: upsert_attempt
INSERT INTO squid_mesh_attempts (run_id, key, step, visit, number, queue, wf_key, status, input,
                                 visible_at, due_at, claim_hash, owner, lease_until, claims,
                                 started_at, finished_at, output, error, finished_rev, priority)
VALUES (:run_id, :key, :step, :visit, :number, :queue, :wf_key, :status, :input, :visible_at,
        :due_at, :claim_hash, :owner, :lease_until, :claims, :started_at, :finished_at, :output,
        :error, :finished_rev, :priority)
ON CONFLICT (run_id, key) DO UPDATE
   SET wf_key = excluded.wf_key, status = excluded.status, visible_at = excluded.visible_at,
       due_at = excluded.due_at,
       claim_hash = excluded.claim_hash,
       owner = excluded.owner, lease_until = excluded.lease_until, claims = excluded.claims,
       started_at = excluded.started_at, finished_at = excluded.finished_at,
       output = excluded.output, error = excluded.error, finished_rev = excluded.finished_rev;

-- name: insert_fact
INSERT INTO squid_mesh_facts (run_id, seq, kind, at, data) VALUES (:run_id, :seq, :kind, :at, :data);

-- name: load_facts
SELECT seq, kind, at, data FROM squid_mesh_facts WHERE run_id = :run_id ORDER BY seq;

-- name: next_claimable
-- Walks the partial index squid_mesh_attempts_due in claim order: higher priority first, then the
-- earliest due. Attempts of definitions this worker has not loaded are passed over, never claimed.
-- INDEXED BY: left to itself, the planner prefers squid_mesh_attempts_next (queue, due_at) for the
-- range on due_at and then sorts every due attempt by priority (a third of the throughput gone).
SELECT run_id, key
  FROM squid_mesh_attempts INDEXED BY squid_mesh_attempts_due
 WHERE queue = :queue
   AND due_at IS NOT NULL
   AND due_at <= :now
   AND wf_key IN (SELECT value FROM json_each(:wf_keys))
 ORDER BY priority DESC, due_at
 LIMIT 1;

-- name: probe_due
-- The idle poller's probe, in a read transaction: is any attempt of this queue due?
SELECT 1
  FROM squid_mesh_attempts INDEXED BY squid_mesh_attempts_next
 WHERE queue = :queue
   AND due_at IS NOT NULL
   AND due_at <= :now
   AND wf_key IN (SELECT value FROM json_each(:wf_keys))
 LIMIT 1;

-- name: list_runs
-- Newest first. The store puts the filter_* fragments for the filters given where /* filters */
-- stands; each filter has an index that leads with it and ends (created_at, run_id) (migration
-- 0002), so a page is a backward walk of `limit` entries of one index, and the cursor (the last
-- row's created_at and run_id) starts the next page exactly where this one ended.
SELECT run_id, workflow, version, status, queue, trigger, created_at, updated_at
  FROM squid_mesh_runs
 WHERE TRUE /* filters */
 ORDER BY created_at DESC, run_id DESC
 LIMIT :limit;

-- name: run_counts
-- Runs per status. With a workflow filter it reads that workflow's part of the (workflow, status,
-- ...) index only; without one it counts the whole table (an operator's occasional question).
SELECT status, count(*)
  FROM squid_mesh_runs
 WHERE TRUE /* filters */
 GROUP BY status;

-- name: filter_workflow
AND workflow = :workflow

-- name: filter_status
AND status = :status

-- name: filter_queue
AND queue = :queue

-- name: filter_started_after
AND created_at > :started_after

-- name: filter_before
-- The cursor: rows strictly after the previous page's last row in newest-first order.
AND (created_at, run_id) < (:before_at, :before_id)

-- name: children
-- A run's child runs in the order they were started (the partial index of migration 0004).
SELECT run_id, workflow, status, parent, context, error
  FROM squid_mesh_runs
 WHERE parent_id = :parent_id
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
 WHERE replayed_from = :run_id
 ORDER BY created_at, run_id;

-- name: has_definitions_table
-- Whether migration 0007 ran (a process may connect before the host migrates).
SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'squid_mesh_definitions';

-- name: register_definition
-- The first registration of a (workflow, version) wins; later ones only read it back.
INSERT INTO squid_mesh_definitions (workflow, version, fingerprint, registered_at)
VALUES (:workflow, :version, :fingerprint, :registered_at)
ON CONFLICT (workflow, version) DO NOTHING;

-- name: recorded_fingerprint
SELECT fingerprint FROM squid_mesh_definitions WHERE workflow = :workflow AND version = :version;

-- name: init_schedule
-- A trigger seen for the first time starts from now: no backfill from the beginning of time.
INSERT INTO squid_mesh_schedules (workflow, trigger, last_slot)
VALUES (:workflow, :trigger, :now)
ON CONFLICT (workflow, trigger) DO NOTHING;

-- name: schedule_last_slot
SELECT last_slot FROM squid_mesh_schedules
 WHERE workflow = :workflow AND trigger = :trigger;

-- name: advance_schedule
-- Only forwards: a slow tick that finishes after a faster one never moves the schedule back.
UPDATE squid_mesh_schedules
   SET last_slot = :slot
 WHERE workflow = :workflow AND trigger = :trigger AND last_slot < :slot;

-- name: count_repeat
INSERT INTO squid_mesh_command_repeats (run_id, command, idempotency_key, repeats, last_at)
VALUES (:run_id, :command, :idempotency_key, 1, :now)
ON CONFLICT (run_id, command, idempotency_key) DO UPDATE
   SET repeats = squid_mesh_command_repeats.repeats + 1, last_at = excluded.last_at;

-- name: command_facts
-- The run's receipts (a few rows; the scan is bounded by the run's own journal).
SELECT seq, kind, at, data FROM squid_mesh_facts
 WHERE run_id = :run_id AND kind = 'command_received'
 ORDER BY seq;

-- name: command_repeats
SELECT command, idempotency_key, repeats FROM squid_mesh_command_repeats
 WHERE run_id = :run_id;

-- name: purgeable_runs
-- Finished runs not changed since a time, oldest first (an operator's occasional clean-up: it reads
-- the runs table, there is no index on updated_at).
SELECT run_id FROM squid_mesh_runs
 WHERE status IN ('completed', 'failed', 'cancelled') AND updated_at < :before
 ORDER BY updated_at
 LIMIT :limit;

-- name: purge_facts
DELETE FROM squid_mesh_facts WHERE run_id = :run_id;

-- name: purge_attempts
DELETE FROM squid_mesh_attempts WHERE run_id = :run_id;

-- name: purge_repeats
DELETE FROM squid_mesh_command_repeats WHERE run_id = :run_id;

-- name: purge_run
DELETE FROM squid_mesh_runs WHERE run_id = :run_id;

-- name: run_ids_page
SELECT run_id FROM squid_mesh_runs WHERE run_id > :after ORDER BY run_id LIMIT :limit;

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS squid_mesh_migrations (
    version    TEXT PRIMARY KEY,
    applied_at REAL NOT NULL
);

-- name: lock_migrations
-- BEGIN IMMEDIATE already serialises migrators; nothing more to lock.
SELECT 1;

-- name: applied_migrations
SELECT version FROM squid_mesh_migrations ORDER BY version;

-- name: record_migration
INSERT INTO squid_mesh_migrations (version, applied_at) VALUES (:version, :applied_at);

-- name: next_due
-- When the next attempt of this queue is due (now or later), walking squid_mesh_attempts_next:
-- an idle worker's probe and its alarm clock in one read.
SELECT min(due_at)
  FROM squid_mesh_attempts INDEXED BY squid_mesh_attempts_next
 WHERE queue = :queue
   AND due_at IS NOT NULL
   AND wf_key IN (SELECT value FROM json_each(:wf_keys));

-- name: queue_limits
SELECT queue, concurrency, rate_limit, rate_period FROM squid_mesh_queues ORDER BY queue;

-- name: lock_queue
-- The IMMEDIATE transaction already serialises every claim: nothing to lock.
SELECT concurrency, rate_limit, rate_period, tokens, refilled_at
  FROM squid_mesh_queues
 WHERE queue = :queue;

-- name: peek_queue
-- A limited queue's row as it is, for explain_run: nothing is locked or changed.
SELECT concurrency, rate_limit, rate_period, tokens, refilled_at
  FROM squid_mesh_queues
 WHERE queue = :queue;

-- name: count_claimed
-- Claimed attempts whose lease still holds (squid_mesh_attempts_claimed).
SELECT count(*)
  FROM squid_mesh_attempts INDEXED BY squid_mesh_attempts_claimed
 WHERE queue = :queue AND status = 'running' AND due_at > :now;

-- name: take_token
-- refilled_at never goes back: a worker whose clock lags must not get the same time credited twice.
UPDATE squid_mesh_queues
   SET tokens = :tokens, refilled_at = max(coalesce(refilled_at, :now), :now)
 WHERE queue = :queue;

-- name: put_queue_limits
-- A new or changed rate limit starts with a full bucket.
INSERT INTO squid_mesh_queues (queue, concurrency, rate_limit, rate_period, tokens, refilled_at,
                               updated_at)
VALUES (:queue, :concurrency, :rate_limit, :rate_period, :rate_limit, :now, :now)
ON CONFLICT (queue) DO UPDATE
   SET concurrency = excluded.concurrency, rate_limit = excluded.rate_limit,
       rate_period = excluded.rate_period,
       -- The same rate again (a deploy re-applying its settings) keeps the bucket as it is.
       tokens = CASE WHEN squid_mesh_queues.rate_limit IS excluded.rate_limit AND squid_mesh_queues.rate_period IS excluded.rate_period
                     THEN squid_mesh_queues.tokens ELSE excluded.tokens END,
       refilled_at = CASE WHEN squid_mesh_queues.rate_limit IS excluded.rate_limit AND squid_mesh_queues.rate_period IS excluded.rate_period
                          THEN squid_mesh_queues.refilled_at ELSE excluded.refilled_at END,
       updated_at = excluded.updated_at;

-- name: delete_queue_limits
DELETE FROM squid_mesh_queues WHERE queue = :queue;

-- name: queue_counts
-- Unfinished attempts per queue, for gauges and operators: visible (due now, claimable, expired
-- leases included), claimed (lease holding), scheduled (due later), and expired (the part of
-- visible whose lease ran out: a worker died or stalled). Reads every live attempt.
SELECT queue,
       sum(CASE WHEN due_at <= :now THEN 1 ELSE 0 END),
       sum(CASE WHEN due_at > :now AND status = 'running' THEN 1 ELSE 0 END),
       sum(CASE WHEN due_at > :now AND status <> 'running' THEN 1 ELSE 0 END),
       sum(CASE WHEN due_at <= :now AND status = 'running' THEN 1 ELSE 0 END)
  FROM squid_mesh_attempts
 WHERE due_at IS NOT NULL
 GROUP BY queue;

-- name: live_claims
-- Who holds claims now, per queue: workers are seen through their leases (an idle worker leaves
-- no row behind). The latest lease expiry shows the last heartbeat. Reads every live attempt.
SELECT owner, queue, count(*), max(lease_until),
       sum(CASE WHEN lease_until <= :now THEN 1 ELSE 0 END)
  FROM squid_mesh_attempts
 WHERE due_at IS NOT NULL AND status = 'running' AND owner IS NOT NULL
 GROUP BY owner, queue
 ORDER BY owner, queue;

-- name: schedule_slots
SELECT workflow, trigger, last_slot FROM squid_mesh_schedules;

-- name: begin_snapshot
-- A read transaction begun on a borrowed connection (the Django store) in autocommit mode.
BEGIN DEFERRED;

-- name: end_snapshot
COMMIT;

-- name: abort_snapshot
ROLLBACK;
