-- What `batchd migrate` reads of a state dir's queue to move it to PostgreSQL (see
-- batchd/store/migrate.py). Each row comes in the order of the PostgreSQL column list
-- of the same table in postgres/sql/migrate.sql, ready for COPY. A job's key differs on
-- PostgreSQL, so its batch and chunk ids (key << 32 | seq) move by ?1: the new first id
-- minus the old one. Errors are read as their UTF-8 bytes, as PostgreSQL keeps them.

-- name: begin_reading
-- Every read below sees one snapshot of the file.
BEGIN DEFERRED

-- name: migrated_api_versions
-- Every version, deleted ones too: a moved job may name one.
SELECT name, version, spec, dotenv, created_at, deleted_at FROM apis ORDER BY name, version

-- name: migrated_jobs
-- The unfinished jobs, with what their rows tell of their counters (`batch_tally`).
SELECT key, job_id, api_name, api_version, kind, status, workers, config, timeout,
    batch_timeout, max_receive_count, priority, total_batch_count, created_at, end_time,
    CAST(error AS BLOB), has_on_complete, retry_of, pruned_at, materialized, paused, paused_at,
    paused_seconds
FROM jobs WHERE status IN ({active_statuses}) ORDER BY key

-- name: migrated_paused_apis
SELECT name, paused_at FROM paused_apis ORDER BY name

-- name: finished_job_count
SELECT count(*) FROM jobs WHERE status NOT IN ({active_statuses})

-- name: batch_tally
-- A job's batch rows by what they become: (queued, of which leased, succeeded, dead,
-- seconds of the succeeded). A leased batch becomes queued: no worker holds it any more.
SELECT coalesce(sum(state IN ('queued', 'leased')), 0), coalesce(sum(state = 'leased'), 0),
    coalesce(sum(state = 'succeeded'), 0), coalesce(sum(state = 'dead'), 0),
    coalesce(sum(CASE WHEN state = 'succeeded' THEN duration END), 0.0)
FROM batches WHERE id BETWEEN ? AND ?

-- name: failure_tally
SELECT count(*) FROM failures WHERE batch BETWEEN ? AND ?

-- name: migrated_batches
-- A lease becomes queued again with its attempt refunded, as when a job's end voids it.
SELECT id + ?1, CASE state WHEN 'leased' THEN 'queued' ELSE state END,
    attempts - (state = 'leased'),
    CASE state WHEN 'leased' THEN NULL ELSE lease_token END,
    CASE state WHEN 'leased' THEN NULL ELSE lease_expires_at END,
    duration, payload, result, finished_at
FROM batches WHERE id BETWEEN ?2 AND ?3 ORDER BY id

-- name: migrated_chunks
SELECT id + ?1, payloads FROM chunks WHERE id BETWEEN ?2 AND ?3 ORDER BY id

-- name: migrated_failures
SELECT batch + ?1, attempt, CAST(error AS BLOB), CAST(traceback AS BLOB), failed_at
FROM failures WHERE batch BETWEEN ?2 AND ?3 ORDER BY batch, attempt
