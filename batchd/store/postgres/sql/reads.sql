-- Reads: jobs, their counts, pages of results and dead letters, metric counts.

-- name: job_by_id
SELECT {job_columns} FROM jobs WHERE job_id = $1

-- name: active_jobs
SELECT {job_columns} FROM jobs WHERE status IN ({active_statuses}) ORDER BY key

-- name: jobs_page
-- Newest first (ids sort by age), with each job's counts: one statement for the page.
-- $2 is the id of the last job of the previous page, NULL for the first.
SELECT {job_columns}, {count_columns} FROM jobs
WHERE api_name = ANY($1::text[]) AND ($2::text IS NULL OR job_id < $2)
ORDER BY job_id DESC LIMIT $3

-- name: active_jobs_page
SELECT {job_columns}, {count_columns} FROM jobs
WHERE api_name = ANY($1::text[]) AND ($2::text IS NULL OR job_id < $2)
    AND status IN ({active_statuses})
ORDER BY job_id DESC LIMIT $3

-- name: job_counts
-- One row, so one snapshot, whatever the job's size.
SELECT {count_columns} FROM jobs WHERE key = $1

-- name: jobs_by_status
-- A paused job is counted as shown: `paused`, not the status it holds under the pause.
SELECT CASE WHEN paused != 0 AND status IN ({active_statuses}) THEN 'paused' ELSE status END,
    count(*)
FROM jobs GROUP BY 1

-- name: queue_depth
SELECT api_name, queued_count, leased_count FROM jobs WHERE status IN ({active_statuses})

-- name: results_page
-- Keyset pages on the batch id: (after id, last id, page rows).
SELECT id, result FROM batches WHERE id > $1 AND id <= $2
    AND state = 'succeeded' AND result IS NOT NULL
ORDER BY id LIMIT $3

-- name: dead_letters_page
-- With the error of each batch's last attempt.
SELECT b.id, b.payload, b.attempts, f.error, f.traceback FROM batches b
LEFT JOIN failures f ON f.batch = b.id AND f.attempt = b.attempts
WHERE b.state = 'dead' AND b.id > $1 AND b.id <= $2
ORDER BY b.id LIMIT $3
