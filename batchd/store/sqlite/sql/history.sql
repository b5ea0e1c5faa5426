-- What the dashboard charts and lists after the fact: a job's outcomes over time, the
-- dead-lettered batches of every job, jobs by status.

-- name: job_success_times
-- A job's successes by time bucket: (bucket start, count). ?1, ?2: the job's batch ids;
-- ?3: the bucket's seconds. A scan of the job's id range, on request only.
SELECT CAST(finished_at / ?3 AS INTEGER) * ?3 AS bucket, count(*) FROM batches
WHERE id BETWEEN ?1 AND ?2 AND state = 'succeeded' AND finished_at IS NOT NULL
GROUP BY bucket ORDER BY bucket

-- name: job_failure_times
-- A job's failed attempts by time bucket: (bucket start, count).
SELECT CAST(failed_at / ?3 AS INTEGER) * ?3 AS bucket, count(*) FROM failures
WHERE batch BETWEEN ?1 AND ?2
GROUP BY bucket ORDER BY bucket

-- name: failed_batches_page
-- Dead-lettered batches of the APIs ?1 (a JSON array), newest job first then by batch
-- (down the partial index batches_dead), with their last attempt's error: (id, API, job
-- id, attempts, error, traceback, failed_at). ?2: the page's cursor (the last id shown);
-- ?3: text the error must contain (case-sensitive; no pattern), or NULL; ?4: page rows.
SELECT b.id, j.api_name, j.job_id, b.attempts, f.error, f.traceback, f.failed_at
FROM batches b
JOIN jobs j ON j.key = b.id >> 32
LEFT JOIN failures f ON f.batch = b.id AND f.attempt = b.attempts
WHERE b.state = 'dead' AND b.id < ?2
    AND j.api_name IN (SELECT value FROM json_each(?1))
    AND (?3 IS NULL OR instr(f.error, ?3) > 0)
ORDER BY b.id DESC LIMIT ?4

-- name: status_jobs_page
-- jobs_page, of the statuses ?4 (a JSON array) only, as shown: a paused job is `paused`.
SELECT {job_columns}, {count_columns} FROM jobs
WHERE api_name IN (SELECT value FROM json_each(?1)) AND job_id < ?2
    AND CASE WHEN paused != 0 AND status IN ({active_statuses}) THEN 'paused' ELSE status END
        IN (SELECT value FROM json_each(?4))
ORDER BY job_id DESC LIMIT ?3
