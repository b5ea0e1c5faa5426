-- What `batchd migrate` writes when it moves a SQLite state dir's queue here (see
-- batchd/store/migrate.py): column lists for COPY, in the order of the rows that
-- sqlite/sql/migrate.sql reads, and what it checks first.

-- name: jobs_already_here
SELECT job_id FROM jobs WHERE job_id = ANY($1::text[]) ORDER BY job_id

-- name: apis_already_here
SELECT DISTINCT name FROM apis WHERE name = ANY($1::text[]) ORDER BY name

-- name: reserve_job_keys
-- Keys for the moved jobs from the column's own sequence: jobs admitted later follow them.
SELECT nextval(pg_get_serial_sequence('jobs', 'key')) FROM generate_series(1, $1)

-- name: migrated_api_columns
name, version, spec, dotenv, created_at, deleted_at

-- name: migrated_job_columns
key, job_id, api_name, api_version, kind, status, workers, config, timeout, batch_timeout,
max_receive_count, priority, total_batch_count, created_at, end_time, error,
has_on_complete, retry_of, pruned_at, materialized, paused, paused_at, paused_seconds,
queued_count, leased_count, succeeded_count, dead_count, failure_count, duration_sum

-- name: migrated_paused_api_columns
name, paused_at

-- name: migrated_batch_columns
id, state, attempts, lease_token, lease_expires_at, duration, payload, result, finished_at

-- name: migrated_chunk_columns
id, payloads

-- name: migrated_failure_columns
batch, attempt, error, traceback, failed_at
