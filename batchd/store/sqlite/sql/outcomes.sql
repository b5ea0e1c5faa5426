-- What workers report: successes and failed attempts. A stale lease token changes nothing.

-- name: current_leases
SELECT id, lease_token FROM batches WHERE id BETWEEN ? AND ? AND state = 'leased'

-- name: succeed_one
UPDATE batches SET state = 'succeeded', result = ?, duration = ?, lease_token = NULL,
    lease_expires_at = NULL, finished_at = {now}
WHERE id = ? AND state = 'leased' AND lease_token = ?

-- name: succeed_run
-- Consecutive batches of one grant, none with a result: SQLite walks the rows itself
-- instead of Python binding each one. Each gets the run's mean time.
UPDATE batches SET state = 'succeeded', duration = ?, lease_token = NULL,
    lease_expires_at = NULL, finished_at = {now}
WHERE id BETWEEN ? AND ? AND state = 'leased' AND lease_token = ?

-- name: fail_batch
-- Re-queued, or dead once out of attempts.
UPDATE batches SET state = CASE WHEN attempts >= ? THEN 'dead' ELSE 'queued' END,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = ? AND state = 'leased' AND lease_token = ?
RETURNING state, attempts

-- name: insert_failure
INSERT INTO failures (batch, attempt, error, traceback, failed_at) VALUES (?, ?, ?, ?, ?)

-- name: now
-- The Unix time, as SQLite's own clock tells it (the same within one statement).
(julianday('now') - 2440587.5) * 86400.0
