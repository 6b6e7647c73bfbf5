-- Every statement schedctl sends to its database, each written once.
--
-- `-- name: NAME` starts a statement; `-- name: NAME [postgresql]` or `[sqlite]` is that
-- dialect's own version where the two cannot share one text. Parameters are `:name`;
-- `{name}` includes a fragment (a `-- fragment: NAME` entry). Other `--` lines are comments.
-- schedctl/db/queries.py reads this file; schedctl/db/repository.py is the only caller.

-- fragment: job_columns
id, name, command, shell, schedule, timezone, timeout_seconds, concurrency, catch_up,
jitter_seconds, retries, retry_delay_seconds, env, workdir, run_as_user, description, tags,
enabled, output_limit_bytes, retention_seconds, created_at, updated_at, revision, notify,
notify_on, placement, secrets, secret_env, signature, signer, signing_key, signed_definition

-- fragment: run_columns
-- What history shows of a run (history.Run); the output tail is read only by `logs`.
id, job_id, job_name, slot, trigger, attempt, status, host, pid, claimed_at, started_at,
finished_at, exit_code, signal, duration_seconds, output_bytes, output_truncated,
clock_skew_seconds

-- fragment: failed
-- models.FAILURE_STATUSES (a test keeps the two equal); the partial index ix_runs_job_failure
-- has the same predicate.
status IN ('failed', 'killed', 'lock_lost', 'lost', 'timed_out')


-- ===== schema and session ===================================================================

-- name: schema_version [postgresql]
-- One round trip in the usual case; the server's pid comes along: compared with libpq's, it
-- tells whether a pooler is in between.
SELECT version_num, pg_backend_pid() FROM alembic_version

-- name: schema_version [sqlite]
SELECT version_num, NULL FROM alembic_version

-- name: has_schema [sqlite]
SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'

-- name: server_version [postgresql]
SELECT current_setting('server_version')

-- name: server_version [sqlite]
SELECT 'SQLite ' || sqlite_version()

-- name: now [postgresql]
SELECT clock_timestamp()

-- name: backend_pid [postgresql]
SELECT pg_backend_pid()

-- name: try_lock [postgresql]
SELECT pg_try_advisory_lock(:namespace, :job_id)

-- name: try_lock_pinned [postgresql]
-- Through a pooler: also prove the statement ran on the backend the session was pinned to,
-- and that this backend did not hold the lock already (another client's, on a shared backend).
-- The comparisons with pg_locks make the keys oids: cast back for the lock function.
SELECT pg_backend_pid(), CASE WHEN pg_backend_pid() <> :pinned_pid THEN false
WHEN EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()
  AND classid = :namespace AND objid = :job_id AND objsubid = 2)
THEN false ELSE pg_try_advisory_lock(:namespace::int, :job_id::int) END

-- name: unlock [postgresql]
SELECT pg_advisory_unlock(:namespace, :job_id)

-- name: lock_holders [postgresql]
-- Every granted schedctl job lock (pg_try_advisory_lock(namespace, job id)).
SELECT objid::int, pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2
AND classid = :namespace ORDER BY objid

-- name: app_try_lock [postgresql]
-- An in-app lock (schedctl.guard): pg_try_advisory_lock(APP_LOCK_NAMESPACE, hash of the name).
SELECT pg_try_advisory_lock(:namespace, :key)

-- name: app_unlock [postgresql]
SELECT pg_advisory_unlock(:namespace, :key)

-- name: app_lock_holders [postgresql]
-- Every granted in-app lock, with the session's application_name ("schedctl lock PID@HOST
-- NAME") and when it last went idle: right after taking the lock, its last statement.
SELECT l.objid::int, l.pid, a.application_name, a.state_change
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = :namespace
ORDER BY l.objid, l.pid


-- ===== jobs =================================================================================

-- name: load_job
SELECT {job_columns} FROM jobs WHERE name = :name

-- name: load_job_by_id
SELECT {job_columns} FROM jobs WHERE id = :id

-- name: list_jobs
SELECT {job_columns} FROM jobs ORDER BY name

-- name: job_names
SELECT id, name FROM jobs

-- name: check_jobs
-- Only what `check` judges a job by: decoding every job's command and environment was a
-- tenth of its time with a thousand jobs.
SELECT id, name, schedule, timezone, timeout_seconds, jitter_seconds, enabled, created_at,
updated_at, revision, placement FROM jobs ORDER BY name

-- name: job_id_by_name
SELECT id FROM jobs WHERE name = :name

-- name: insert_job
INSERT INTO jobs (name, command, shell, schedule, timezone, timeout_seconds, concurrency,
catch_up, jitter_seconds, retries, retry_delay_seconds, env, workdir, run_as_user,
description, tags, enabled, output_limit_bytes, retention_seconds, created_at, updated_at,
revision, notify, notify_on, placement, secrets, secret_env, signature, signer,
signing_key, signed_definition)
VALUES (:name, :command, :shell, :schedule, :timezone, :timeout_seconds, :concurrency,
:catch_up, :jitter_seconds, :retries, :retry_delay_seconds, :env, :workdir, :run_as_user,
:description, :tags, :enabled, :output_limit_bytes, :retention_seconds, :now, :now, 1,
:notify, :notify_on, :placement, :secrets, :secret_env, :signature, :signer,
:signing_key, :signed_definition)
RETURNING id

-- name: update_job
-- Compare-and-set on the revision: an edit made meanwhile by someone else is never lost.
UPDATE jobs SET name = :name, command = :command, shell = :shell, schedule = :schedule,
timezone = :timezone, timeout_seconds = :timeout_seconds, concurrency = :concurrency,
catch_up = :catch_up, jitter_seconds = :jitter_seconds, retries = :retries,
retry_delay_seconds = :retry_delay_seconds, env = :env, workdir = :workdir,
run_as_user = :run_as_user, description = :description, tags = :tags, enabled = :enabled,
output_limit_bytes = :output_limit_bytes, retention_seconds = :retention_seconds,
notify = :notify, notify_on = :notify_on, placement = :placement, secrets = :secrets,
secret_env = :secret_env, updated_at = :now, signature = :signature, signer = :signer,
signing_key = :signing_key, signed_definition = :signed_definition,
revision = :revision + 1
WHERE id = :id AND revision = :revision

-- name: delete_job
DELETE FROM jobs WHERE id = :id

-- name: delete_job_at_revision
-- `apply --prune`: a job changed since the plan was read is not removed.
DELETE FROM jobs WHERE id = :id AND revision = :revision

-- name: delete_job_runs
DELETE FROM runs WHERE job_id = :job_id

-- name: count_job_runs
SELECT count(*) FROM runs WHERE job_id = :job_id

-- name: insert_job_change
-- The schedule-relevant state from `at` on: missed slots are judged by the rules then.
INSERT INTO job_changes (job_id, at, enabled, schedule, timezone)
VALUES (:job_id, :at, :enabled, :schedule, :timezone)

-- name: job_changes
SELECT job_id, at, enabled, schedule, timezone FROM job_changes ORDER BY job_id, at

-- name: change_author [postgresql]
-- The OS user schedctl runs as, for the change log's trigger to record beside the role; local
-- to the transaction. It is what the client says, no more: the role is the database's word.
SELECT set_config('schedctl.os_user', :os_user, true)

-- name: changes_mark [sqlite]
-- The newest change record before this transaction's writes (it holds the write lock).
SELECT coalesce(max(id), 0) FROM job_audit

-- name: change_author [sqlite]
-- A trigger cannot know the OS user: the records this transaction's writes made get it here.
UPDATE job_audit SET os_user = :os_user WHERE id > :mark AND os_user IS NULL

-- fragment: change_columns
id, job_id, job_name, action, at, revision, db_role, session_role, application_name,
client_addr, os_user, signer, changes

-- name: job_audit
-- Newest first.
SELECT {change_columns} FROM job_audit WHERE (:any_since OR at >= :since)
ORDER BY id DESC LIMIT :limit

-- name: job_audit_of_job
-- On ix_job_audit_job_name_id: a removed job's changes stay under its name.
SELECT {change_columns} FROM job_audit WHERE job_name = :job AND (:any_since OR at >= :since)
ORDER BY id DESC LIMIT :limit

-- name: prune_marks
SELECT job_id, pruned_before FROM prune_marks


-- ===== hosts ================================================================================

-- name: register_host [postgresql]
-- By the database clock, so hosts with skewed clocks agree on who was seen when; the clock
-- comes back, and `run` uses it as its database time. A NULL scheduler (`run --now`) keeps the
-- one a sync or the daemon recorded.
INSERT INTO hosts (name, labels, version, scheduler, first_seen, last_seen, last_sync)
VALUES (:name, :labels, :version, :scheduler, clock_timestamp(), clock_timestamp(),
CASE WHEN :synced THEN clock_timestamp() END)
ON CONFLICT (name) DO UPDATE SET labels = EXCLUDED.labels, version = EXCLUDED.version,
scheduler = COALESCE(EXCLUDED.scheduler, hosts.scheduler), last_seen = EXCLUDED.last_seen,
last_sync = COALESCE(EXCLUDED.last_sync, hosts.last_sync)
RETURNING last_seen

-- name: register_host [sqlite]
INSERT INTO hosts (name, labels, version, scheduler, first_seen, last_seen, last_sync)
VALUES (:name, :labels, :version, :scheduler, :now, :now, CASE WHEN :synced THEN :now END)
ON CONFLICT (name) DO UPDATE SET labels = excluded.labels, version = excluded.version,
scheduler = COALESCE(excluded.scheduler, hosts.scheduler), last_seen = excluded.last_seen,
last_sync = COALESCE(excluded.last_sync, hosts.last_sync)
RETURNING last_seen

-- name: list_hosts
SELECT name, labels, version, scheduler, first_seen, last_seen, last_sync FROM hosts
ORDER BY name

-- name: forget_host
DELETE FROM hosts WHERE name = :name


-- ===== refusals =============================================================================

-- name: record_refusal [postgresql]
-- One row per job and host: a host that keeps refusing counts up, and says when it began.
INSERT INTO refusals (job_id, host, job_name, job_revision, kind, reason, slot, first_at,
last_at, count)
VALUES (:job_id, :host, :job_name, :job_revision, :kind, :reason, :slot, clock_timestamp(),
clock_timestamp(), 1)
ON CONFLICT (job_id, host) DO UPDATE SET job_name = EXCLUDED.job_name,
job_revision = EXCLUDED.job_revision, kind = EXCLUDED.kind, reason = EXCLUDED.reason,
slot = COALESCE(EXCLUDED.slot, refusals.slot), last_at = EXCLUDED.last_at,
count = refusals.count + 1

-- name: record_refusal [sqlite]
INSERT INTO refusals (job_id, host, job_name, job_revision, kind, reason, slot, first_at,
last_at, count)
VALUES (:job_id, :host, :job_name, :job_revision, :kind, :reason, :slot, :now, :now, 1)
ON CONFLICT (job_id, host) DO UPDATE SET job_name = excluded.job_name,
job_revision = excluded.job_revision, kind = excluded.kind, reason = excluded.reason,
slot = COALESCE(excluded.slot, refusals.slot), last_at = excluded.last_at,
count = refusals.count + 1

-- name: clear_refusal
DELETE FROM refusals WHERE job_id = :job_id AND host = :host

-- name: refused_by_host
SELECT job_id FROM refusals WHERE host = :host

-- name: list_refusals
-- Only refusals of the job's current revision: a signed edit since then is judged anew.
SELECT r.job_id, r.job_name, r.host, r.job_revision, r.kind, r.reason, r.slot, r.first_at,
r.last_at, r.count
FROM refusals r JOIN jobs j ON j.id = r.job_id AND j.revision = r.job_revision
ORDER BY r.job_name, r.host


-- ===== schedctl run =========================================================================

-- name: claim_slot
-- The fleet-wide claim: one first attempt per (job, slot), whoever inserts it first. Retries
-- (attempt 2, 3, ...) and manual runs (no slot) are outside the unique index: always inserted.
INSERT INTO runs (job_id, job_name, job_revision, slot, trigger, attempt, status, host, pid,
db_backend_pid, claimed_at, output_bytes, output_truncated, clock_skew_seconds,
schedctl_version, fence_seconds)
VALUES (:job_id, :job_name, :job_revision, :slot, :trigger, :attempt, 'running', :host, :pid,
:backend_pid, :claimed_at, 0, false, :clock_skew_seconds, :version, :fence_seconds)
ON CONFLICT (job_id, slot) WHERE attempt = 1 DO NOTHING RETURNING id

-- name: ran_before_readded
-- A removed job's runs keep its name with job_id NULL: a job added again under that name
-- must not run a slot its predecessor already ran.
SELECT 1 FROM runs WHERE job_name = :name AND slot = :slot AND attempt = 1 AND job_id IS NULL
LIMIT 1

-- name: mark_started [postgresql]
-- By the server's clock: it is the run's first heartbeat too.
UPDATE runs SET started_at = clock_timestamp(), heartbeat_at = clock_timestamp()
WHERE id = :run_id RETURNING started_at

-- name: mark_started [sqlite]
UPDATE runs SET started_at = :now, heartbeat_at = :now WHERE id = :run_id RETURNING started_at

-- name: heartbeat [postgresql]
-- The row names the server backend that claimed it: a statement that lands on another backend
-- (a transaction pooler moved us) updates nothing, which counts as a lost session too.
UPDATE runs SET heartbeat_at = clock_timestamp()
WHERE id = :run_id AND db_backend_pid = pg_backend_pid()

-- name: heartbeat [sqlite]
UPDATE runs SET heartbeat_at = :now WHERE id = :run_id

-- name: run_exists
-- Whether a heartbeat that updated nothing found its row gone (`remove --purge` mid-run).
SELECT 1 FROM runs WHERE id = :run_id

-- fragment: fence
-- A row's fence in seconds, within [0, :max_fence] whatever is stored: an older schedctl wrote
-- any SCHEDCTL_HEARTBEAT it was given (infinity, NaN), and one such row must not put every
-- statement that reads the fence out of the interval range.
least(greatest(coalesce(fence_seconds, :default_fence), 0), :max_fence)

-- name: fence_left [postgresql]
-- Seconds until every other started run of the job has surely stopped its job.
SELECT extract(epoch FROM max(coalesce(heartbeat_at, started_at)
  + {fence} * interval '1 second') - clock_timestamp())::float8
FROM runs WHERE job_id = :job_id AND status = 'running' AND started_at IS NOT NULL
AND id <> :run_id

-- fragment: same_runner
-- The row is the run of the runner that sends the result (spool files of older versions name
-- none). After a failover that lost a claim, the new primary can hand the same run id to
-- another host's run: a result must not finish that one.
(CAST(:host AS text) IS NULL OR (host = :host AND pid = :pid))

-- name: finish_run
UPDATE runs SET status = :status, exit_code = :exit_code, signal = :signal,
started_at = :started_at, finished_at = :finished_at, duration_seconds = :duration_seconds,
output_tail = :output_tail, output_bytes = :output_bytes, output_truncated = :output_truncated
WHERE id = :run_id AND {same_runner}

-- name: finish_spooled_run
-- A spooled result finishes a run still unfinished: `running`, or `lost` because its runner
-- was cut off from the database while it ran. A final result is never replaced.
UPDATE runs SET status = :status, exit_code = :exit_code, signal = :signal,
started_at = :started_at, finished_at = :finished_at, duration_seconds = :duration_seconds,
output_tail = :output_tail, output_bytes = :output_bytes, output_truncated = :output_truncated
WHERE id = :run_id AND status IN ('running', 'lost') AND {same_runner}

-- name: run_status
SELECT status, host, pid FROM runs WHERE id = :run_id

-- name: reconcile_lost [postgresql]
-- Runs whose session has ended, from any host. The function, not the pg_stat_activity view:
-- planning the view's joins in a fresh session costs more than the rest of this statement.
-- A runner outlives its session (a restarted server) until its fence has passed: until then
-- its job may still be running, so the row is not final yet.
UPDATE runs SET status = 'lost', finished_at = clock_timestamp()
WHERE status = 'running' AND db_backend_pid IS NOT NULL
AND NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(runs.db_backend_pid))
AND (started_at IS NULL OR coalesce(heartbeat_at, started_at)
  + {fence} * interval '1 second' < clock_timestamp())

-- name: reown_run [postgresql]
-- A runner whose session was lost after its claim and before its job started takes its row
-- back on a new session: only while the row still names the lost session (no other host has
-- marked it lost meanwhile) and the job never started.
UPDATE runs SET db_backend_pid = pg_backend_pid(), heartbeat_at = clock_timestamp()
WHERE id = :run_id AND status = 'running' AND started_at IS NULL
AND db_backend_pid = :old_pid RETURNING id

-- name: reown_run [sqlite]
-- One process's file: nobody else settles a live runner's row.
UPDATE runs SET heartbeat_at = :now
WHERE id = :run_id AND status = 'running' AND started_at IS NULL RETURNING id

-- name: abandon_run [postgresql]
-- The job did not start: the row says so (lost, no start), so the slot counts as missed.
UPDATE runs SET status = 'lost', started_at = NULL, finished_at = clock_timestamp()
WHERE id = :run_id AND status = 'running' AND db_backend_pid = :old_pid

-- name: abandon_run [sqlite]
UPDATE runs SET status = 'lost', started_at = NULL, finished_at = :now
WHERE id = :run_id AND status = 'running'

-- name: running_on_host [sqlite]
SELECT id, pid FROM runs WHERE status = 'running' AND host = :host

-- name: mark_lost [sqlite]
UPDATE runs SET status = 'lost', finished_at = :now WHERE id = :run_id AND status = 'running'


-- ===== history ==============================================================================

-- fragment: history_filters
-- Each filter applies unless its any_ flag is set; a flag, not `:x IS NULL`, so that the
-- server knows every parameter's type.
(:any_status OR status = :status) AND (:any_since OR claimed_at >= :since)
AND (:any_host OR host = :host)

-- name: history
-- Newest first.
SELECT {run_columns} FROM runs WHERE {history_filters} ORDER BY id DESC LIMIT :limit

-- name: history_of_job
-- On ix_runs_job_name_id: history outlives a removed job's id.
SELECT {run_columns} FROM runs WHERE job_name = :job AND {history_filters}
ORDER BY id DESC LIMIT :limit

-- name: get_run
SELECT {run_columns}, output_tail FROM runs WHERE id = :run_id

-- name: latest_run_of_job
-- `logs JOB`: the newest run that ran and ended (or, with :failed_only, that failed).
SELECT {run_columns}, output_tail FROM runs
WHERE job_name = :job AND status NOT IN ('running', 'skipped_overlap')
AND (NOT :failed_only OR status IN ('failed', 'timed_out', 'killed', 'lock_lost', 'lost'))
ORDER BY id DESC LIMIT 1

-- name: running_runs
SELECT {run_columns}, heartbeat_at FROM runs WHERE status = 'running' ORDER BY id

-- name: runs_since [postgresql]
SELECT {run_columns} FROM runs WHERE claimed_at >= :since AND job_id = ANY(:job_ids)
ORDER BY id DESC LIMIT :limit

-- name: runs_since [sqlite]
SELECT {run_columns} FROM runs
WHERE claimed_at >= :since AND job_id IN (SELECT value FROM json_each(:job_ids))
ORDER BY id DESC LIMIT :limit


-- ===== report, check, metrics ===============================================================

-- fragment: ran
-- A first attempt that ended `lost` without a start never ran its slot: that slot is missed.
NOT (status = 'lost' AND started_at IS NULL)

-- name: newest_runs [postgresql]
-- Each job's newest run, in one round trip: an index probe per job on (job_id, id).
SELECT r.id, r.job_id, r.job_name, r.slot, r.trigger, r.attempt, r.status, r.host, r.pid,
r.claimed_at, r.started_at, r.finished_at, r.exit_code, r.signal, r.duration_seconds,
r.output_bytes, r.output_truncated, r.clock_skew_seconds
FROM jobs j CROSS JOIN LATERAL (SELECT * FROM runs WHERE job_id = j.id ORDER BY id DESC
LIMIT 1) r

-- name: newest_runs [sqlite]
SELECT {run_columns} FROM runs WHERE id IN (SELECT (SELECT id FROM runs x
WHERE x.job_id = j.id ORDER BY id DESC LIMIT 1) FROM jobs j)

-- name: window_stats [postgresql]
-- Job by job on ix_runs_job_claimed (job_id, claimed_at) INCLUDE (...): measured faster than
-- one scan of the whole window and a sort on job_id (bench/history_bench.py). A first attempt
-- claimed a little before `since` for a slot after it (a host ahead of the database) is
-- counted by `early`.
SELECT j.id AS job_id, w.runs, w.succeeded, w.skipped, w.running, w.pct[1] AS p50,
w.pct[2] AS p95, w.max, w.present,
(SELECT count(*) FROM runs e WHERE e.job_id = j.id AND e.claimed_at >= :scan_from
  AND e.claimed_at < :since AND e.attempt = 1 AND e.slot >= :since AND e.slot <= :slots_to
  AND NOT (e.status = 'lost' AND e.started_at IS NULL))
  AS early
FROM jobs j CROSS JOIN LATERAL (
  SELECT count(*) AS runs,
  count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
  count(*) FILTER (WHERE status = 'skipped_overlap') AS skipped,
  count(*) FILTER (WHERE status = 'running') AS running,
  percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY duration_seconds)
    FILTER (WHERE status <> 'skipped_overlap') AS pct,
  max(duration_seconds) FILTER (WHERE status <> 'skipped_overlap') AS max,
  count(*) FILTER (WHERE attempt = 1 AND slot >= :since AND slot <= :slots_to AND {ran})
  AS present
  FROM runs r WHERE r.job_id = j.id AND r.claimed_at >= :since) w

-- name: window_stats [sqlite]
SELECT job_id,
count(*) FILTER (WHERE claimed_at >= :since) AS runs,
count(*) FILTER (WHERE claimed_at >= :since AND status = 'succeeded') AS succeeded,
count(*) FILTER (WHERE claimed_at >= :since AND status = 'skipped_overlap') AS skipped,
count(*) FILTER (WHERE claimed_at >= :since AND status = 'running') AS running,
NULL AS p50, NULL AS p95,
max(duration_seconds) FILTER (WHERE claimed_at >= :since AND status <> 'skipped_overlap')
  AS max,
count(*) FILTER (WHERE attempt = 1 AND slot >= :since AND slot <= :slots_to AND {ran})
  AS present,
0 AS early
FROM runs WHERE claimed_at >= :scan_from AND job_id IS NOT NULL GROUP BY job_id

-- name: window_durations [sqlite]
-- SQLite has no percentile aggregate: the durations, sorted, for percentiles in Python.
SELECT job_id, duration_seconds FROM runs WHERE claimed_at >= :since
AND duration_seconds IS NOT NULL AND status <> 'skipped_overlap'
ORDER BY job_id, duration_seconds

-- name: last_outcomes [postgresql]
-- Each job's newest success and newest failure: two probes per job on the partial indexes.
SELECT j.id, s.id, s.finished_at, s.duration_seconds,
f.id, f.status, f.finished_at, f.claimed_at, f.duration_seconds FROM jobs j
LEFT JOIN LATERAL (SELECT id, finished_at, duration_seconds FROM runs
  WHERE job_id = j.id AND status = 'succeeded' ORDER BY id DESC LIMIT 1) s ON true
LEFT JOIN LATERAL (SELECT id, status, finished_at, claimed_at, duration_seconds FROM runs
  WHERE job_id = j.id AND {failed} ORDER BY id DESC LIMIT 1) f ON true

-- name: last_outcomes [sqlite]
SELECT j.id, s.id, s.finished_at, s.duration_seconds,
f.id, f.status, f.finished_at, f.claimed_at, f.duration_seconds FROM jobs j
LEFT JOIN runs s ON s.id = (SELECT id FROM runs WHERE job_id = j.id AND status = 'succeeded'
  ORDER BY id DESC LIMIT 1)
LEFT JOIN runs f ON f.id = (SELECT id FROM runs WHERE job_id = j.id AND {failed}
  ORDER BY id DESC LIMIT 1)

-- name: p95_of_jobs [postgresql]
-- What "running unusually long" compares to, for the jobs running now.
SELECT job_id, percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_seconds), count(*)
FROM runs WHERE job_id = ANY(:job_ids) AND claimed_at >= :since AND status = 'succeeded'
AND duration_seconds IS NOT NULL GROUP BY job_id

-- name: durations_of_jobs [sqlite]
SELECT job_id, duration_seconds FROM runs
WHERE job_id IN (SELECT value FROM json_each(:job_ids)) AND claimed_at >= :since
AND status = 'succeeded' AND duration_seconds IS NOT NULL ORDER BY job_id, duration_seconds

-- name: slots_that_ran [postgresql]
-- Which (job, slot) pairs have a first attempt that ran: an index probe on (job_id, slot) per pair.
-- Slots are whole seconds, so POSIX times as float8 are exact and cheaper than timestamps.
SELECT job_id, slot FROM runs WHERE attempt = 1 AND {ran} AND (job_id, slot) IN
(SELECT j, to_timestamp(e) FROM unnest(:job_ids::int[], :epochs::float8[]) AS u(j, e))

-- name: slots_that_ran [sqlite]
SELECT job_id, slot FROM runs WHERE attempt = 1 AND {ran} AND (job_id, slot) IN
(SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(:pairs))

-- name: slots_between
-- The slots of a job's first attempts in [start, end] that ran.
SELECT slot FROM runs WHERE job_id = :job_id AND attempt = 1 AND slot >= :start
AND slot <= :end AND {ran}

-- name: status_totals
-- Counted by triggers on runs as each run reaches a final status (migration 0004), never
-- counted down: metrics reads them instead of counting all history, and prune does not lower
-- them. A counter stays while its job exists or any of its runs does: after `remove --purge`
-- (or once a removed job's last run is pruned) the series is gone, as Prometheus expects of a
-- gone target; should the name come back, it goes on counting.
SELECT c.job_name, c.status, c.total FROM run_counts c
WHERE EXISTS (SELECT 1 FROM jobs j WHERE j.name = c.job_name)
OR EXISTS (SELECT 1 FROM runs r WHERE r.job_name = c.job_name)


-- ===== prune ================================================================================
-- Job by job on ix_runs_job_claimed (job_id, claimed_at): each batch is a short range scan.
-- A live run is never deleted under its runner; failures are kept until their own cutoff.
-- First attempts of slots from :claimable_from on stay whatever their age: a firing may still
-- pick those slots, and only that row stops it from running one twice.

-- fragment: expired
claimed_at < :older_cutoff AND status <> 'running'
AND ((({failed}) AND claimed_at < :failures_before)
  OR (NOT ({failed}) AND claimed_at < :others_before))

-- fragment: claimable
(attempt = 1 AND slot IS NOT NULL AND slot >= :claimable_from)

-- name: prune_count
SELECT job_name, count(*) FROM runs WHERE job_id = :job_id AND {expired} AND NOT {claimable}
GROUP BY job_name

-- name: prune_count_removed
SELECT job_name, count(*) FROM runs WHERE job_id IS NULL AND {expired} GROUP BY job_name

-- name: prune_count_claimable
SELECT job_name, count(*) FROM runs WHERE job_id = :job_id AND {expired} AND {claimable}
GROUP BY job_name

-- name: prune_delete
DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE job_id = :job_id AND {expired}
AND NOT {claimable} LIMIT :batch) RETURNING job_name

-- name: prune_delete_removed
DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE job_id IS NULL AND {expired}
LIMIT :batch) RETURNING job_name

-- name: prune_mark [postgresql]
-- Runs claimed before `pruned_before` may be gone: slots before it are not judged.
INSERT INTO prune_marks (job_id, pruned_before) VALUES (:job_id, :pruned_before)
ON CONFLICT (job_id) DO UPDATE
SET pruned_before = greatest(prune_marks.pruned_before, excluded.pruned_before)

-- name: prune_mark [sqlite]
INSERT INTO prune_marks (job_id, pruned_before) VALUES (:job_id, :pruned_before)
ON CONFLICT (job_id) DO UPDATE
SET pruned_before = max(prune_marks.pruned_before, excluded.pruned_before)


-- ===== notifications ========================================================================
-- The outbox (migration 0005): triggers on runs add a row per target as a run's result is
-- recorded; `schedctl notify` adds missed slots. A deliverer claims rows for a lease that
-- outlasts its delivery timeouts, so no two deliverers ever send the same row.

-- fragment: notification_columns
n.id, n.job_id, n.job_name, n.run_id, n.slot, n.event, n.target, n.attempts, r.status, r.exit_code,
r.signal, r.host, r.started_at, r.finished_at, r.duration_seconds, r.attempt, r.trigger,
r.output_tail, r.claimed_at

-- name: claim_notifications [postgresql]
-- SKIP LOCKED: deliverers on several hosts each take other rows instead of waiting.
WITH due AS (SELECT id FROM notifications WHERE state = 'pending'
  AND next_attempt_at <= clock_timestamp()
  AND (claimed_until IS NULL OR claimed_until < clock_timestamp())
  AND (:any_run OR run_id = ANY(:run_ids))
  ORDER BY next_attempt_at, id LIMIT :limit FOR UPDATE SKIP LOCKED),
claimed AS (UPDATE notifications SET claimed_by = :owner,
  claimed_until = clock_timestamp() + make_interval(secs => :lease), attempts = attempts + 1
  WHERE id IN (SELECT id FROM due) RETURNING *)
SELECT {notification_columns} FROM claimed n LEFT JOIN runs r ON r.id = n.run_id ORDER BY n.id

-- name: claim_notifications [sqlite]
-- One writer at a time: the conditional update is the claim.
UPDATE notifications SET claimed_by = :owner, claimed_until = :lease_end,
attempts = attempts + 1
WHERE id IN (SELECT id FROM notifications WHERE state = 'pending' AND next_attempt_at <= :now
  AND (claimed_until IS NULL OR claimed_until < :now)
  AND (:any_run OR run_id IN (SELECT value FROM json_each(:run_ids)))
  ORDER BY next_attempt_at, id LIMIT :limit)
RETURNING id

-- name: claimed_notifications [sqlite]
SELECT {notification_columns} FROM notifications n LEFT JOIN runs r ON r.id = n.run_id
WHERE n.id IN (SELECT value FROM json_each(:ids)) ORDER BY n.id

-- name: notification_sent [postgresql]
-- Only while the claim is still ours.
UPDATE notifications SET state = 'sent', done_at = clock_timestamp(), claimed_until = NULL,
last_error = NULL WHERE id = :id AND claimed_by = :owner

-- name: notification_sent [sqlite]
UPDATE notifications SET state = 'sent', done_at = :now, claimed_until = NULL,
last_error = NULL WHERE id = :id AND claimed_by = :owner

-- name: notification_retry [postgresql]
UPDATE notifications SET claimed_until = NULL, last_error = :error,
next_attempt_at = clock_timestamp() + make_interval(secs => :delay)
WHERE id = :id AND claimed_by = :owner

-- name: notification_retry [sqlite]
UPDATE notifications SET claimed_until = NULL, last_error = :error,
next_attempt_at = :next_at WHERE id = :id AND claimed_by = :owner

-- name: notification_release
-- Claimed but not tried: the claim's attempt is given back.
UPDATE notifications SET claimed_until = NULL, attempts = attempts - 1
WHERE id = :id AND claimed_by = :owner

-- name: notification_gave_up [postgresql]
UPDATE notifications SET state = 'failed', done_at = clock_timestamp(), claimed_until = NULL,
last_error = :error WHERE id = :id AND claimed_by = :owner

-- name: notification_gave_up [sqlite]
UPDATE notifications SET state = 'failed', done_at = :now, claimed_until = NULL,
last_error = :error WHERE id = :id AND claimed_by = :owner

-- name: insert_missed [postgresql]
-- Whichever host finds a missed slot first adds it; the others add nothing. Due by the
-- server's clock, as every claim is judged.
INSERT INTO notifications (job_id, job_name, run_id, slot, event, target, state, attempts,
created_at, next_attempt_at)
VALUES (:job_id, :job_name, NULL, :slot, 'missed', :target, 'pending', 0, clock_timestamp(),
clock_timestamp())
ON CONFLICT (job_id, slot, target) WHERE event = 'missed' DO NOTHING

-- name: insert_missed [sqlite]
INSERT INTO notifications (job_id, job_name, run_id, slot, event, target, state, attempts,
created_at, next_attempt_at)
VALUES (:job_id, :job_name, NULL, :slot, 'missed', :target, 'pending', 0, :now, :now)
ON CONFLICT (job_id, slot, target) WHERE event = 'missed' DO NOTHING

-- name: delete_old_notifications
DELETE FROM notifications WHERE state <> 'pending' AND created_at < :before

-- name: notification_counts
SELECT state, count(*) FROM notifications GROUP BY state
