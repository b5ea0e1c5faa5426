-- What workers report: successes and failed attempts. A stale lease token changes nothing.

-- name: succeed_each
-- Successes with a result, one statement for the lot: ($1 results, $2 durations, $3 ids,
-- $4 tokens). Returns the durations of the ones accepted (a stale token is not).
UPDATE batches b SET state = 'succeeded', result = r.result, duration = r.duration,
    lease_token = NULL, lease_expires_at = NULL, finished_at = {now}
FROM unnest($1::bytea[], $2::float8[], $3::bigint[], $4::bigint[])
    AS r (result, duration, id, token)
WHERE b.id = r.id AND b.state = 'leased' AND b.lease_token = r.token
RETURNING r.duration

-- name: succeed_run
-- Consecutive batches of one grant, none with a result: one range, not a row per batch.
-- Each gets the run's mean time.
UPDATE batches SET state = 'succeeded', duration = $1, lease_token = NULL,
    lease_expires_at = NULL, finished_at = {now}
WHERE id BETWEEN $2 AND $3 AND state = 'leased' AND lease_token = $4

-- name: fail_batch
-- Re-queued, or dead once out of attempts.
UPDATE batches SET state = CASE WHEN attempts >= $1 THEN 'dead' ELSE 'queued' END,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = $2 AND state = 'leased' AND lease_token = $3
RETURNING state, attempts

-- name: insert_failure
INSERT INTO failures (batch, attempt, error, traceback, failed_at) VALUES ($1, $2, $3, $4, $5)

-- name: now
-- The Unix time of the transaction, on the database's clock: one clock for every node.
extract(epoch FROM now())::float8
