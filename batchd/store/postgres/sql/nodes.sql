-- The nodes sharing the queue: registration, heartbeats, the sweep of silent nodes,
-- worker slots claimed across nodes, the on_job_complete claim, and job notifications.

-- name: register_node
-- ($1 name, $2 instance, $3 pid, $4 max_workers, $5 gpus.)
INSERT INTO nodes (name, instance, pid, max_workers, gpus, started_at, heartbeat_at)
VALUES ($1, $2, $3, $4, $5, extract(epoch FROM clock_timestamp()),
    extract(epoch FROM clock_timestamp()))
RETURNING id

-- name: live_nodes_named
-- Earlier runs of a name that never ended: (id, instance, seconds since their heartbeat).
SELECT id, instance, extract(epoch FROM clock_timestamp()) - heartbeat_at FROM nodes
WHERE name = $1 AND ended_at IS NULL AND id <> $2
ORDER BY id
FOR UPDATE

-- name: heartbeat
-- No row: the node was ended (swept as lost): it is fenced.
UPDATE nodes SET heartbeat_at = extract(epoch FROM clock_timestamp())
WHERE id = $1 AND ended_at IS NULL
RETURNING id

-- name: silent_nodes
-- Nodes silent past node_timeout ($1 seconds); one sweeper takes each, the others skip it.
SELECT id, name FROM nodes
WHERE ended_at IS NULL AND heartbeat_at < extract(epoch FROM clock_timestamp()) - $1
    AND id <> $2
ORDER BY id
FOR UPDATE SKIP LOCKED

-- name: end_node
UPDATE nodes SET ended_at = extract(epoch FROM clock_timestamp()), end_reason = $2
WHERE id = $1 AND ended_at IS NULL

-- name: free_node_workers
DELETE FROM job_workers WHERE node = $1

-- name: expire_node_leases
-- A lost node's leases of one job, found by their token's node bits: failed attempts.
UPDATE batches SET state = CASE WHEN attempts >= $1 THEN 'dead' ELSE 'queued' END,
    lease_token = NULL, lease_expires_at = NULL
WHERE id BETWEEN $2 AND $3 AND state = 'leased' AND lease_token BETWEEN $4 AND $5
RETURNING id, state, attempts

-- name: lost_hooks
-- Unfinished jobs whose on_job_complete ran on a lost node: it is not run again.
UPDATE jobs SET hook_node = -1
WHERE hook_node = $1 AND status IN ({active_statuses})
RETURNING job_id

-- name: lock_job_workers
-- One claim of a job's slots at a time, across nodes; no row lock on the job (its
-- counters are updated on every outcome). Held to the end of the transaction.
SELECT pg_advisory_xact_lock(hashtext('batchd job workers'), ($1 % 2147483647)::int)

-- name: job_workers_total
SELECT coalesce(sum(workers), 0)::int FROM job_workers WHERE job_key = $1

-- name: claim_job_worker
-- One more slot of the job on this node, unless this node was ended.
INSERT INTO job_workers (job_key, node, workers)
SELECT $1, $2, 1 WHERE EXISTS (SELECT 1 FROM nodes WHERE id = $2 AND ended_at IS NULL)
ON CONFLICT (job_key, node) DO UPDATE SET workers = job_workers.workers + 1
RETURNING workers

-- name: release_job_worker
UPDATE job_workers SET workers = workers - 1 WHERE job_key = $1 AND node = $2 AND workers > 0

-- name: drop_empty_job_workers
DELETE FROM job_workers WHERE job_key = $1 AND node = $2 AND workers <= 0

-- name: claim_hook
-- This node runs the job's on_job_complete, unless another node took it.
UPDATE jobs SET hook_node = $2
WHERE key = $1 AND (hook_node IS NULL OR hook_node = $2)
RETURNING key

-- name: hook_node
SELECT hook_node FROM jobs WHERE key = $1

-- name: notify_jobs
-- Told to every node's listener on commit: a job was admitted or changed status.
SELECT pg_notify('batchd_jobs', $1)
