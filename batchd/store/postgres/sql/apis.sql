-- Deployed API versions: a deletion marks every version of the name deleted.

-- name: lock_api_versions
-- Held to the end of the transaction that numbers the API's next version.
SELECT pg_advisory_xact_lock(hashtext('batchd api versions'), hashtext($1))

-- name: latest_api_version
SELECT max(version) FROM apis WHERE name = $1

-- name: insert_api
INSERT INTO apis (name, version, spec, dotenv, created_at) VALUES ($1, $2, $3, $4, $5)

-- name: live_api
SELECT name, version, spec, dotenv, created_at FROM apis
WHERE name = $1 AND deleted_at IS NULL ORDER BY version DESC LIMIT 1

-- name: api_version
SELECT name, version, spec, dotenv, created_at FROM apis WHERE name = $1 AND version = $2

-- name: live_apis
-- The latest version of every API not deleted.
SELECT name, version, spec, dotenv, created_at FROM apis a WHERE deleted_at IS NULL
AND version = (SELECT max(version) FROM apis b WHERE b.name = a.name) ORDER BY name

-- name: api_versions
SELECT name, version, spec, dotenv, created_at FROM apis
WHERE name = $1 AND deleted_at IS NULL ORDER BY version DESC

-- name: delete_api
UPDATE apis SET deleted_at = $1 WHERE name = $2 AND deleted_at IS NULL

-- name: insert_api_archive
-- Archives of the same snapshot digest hold the same project: the first one stays.
INSERT INTO api_archives (name, digest, archive) VALUES ($1, $2, $3)
ON CONFLICT (name, digest) DO NOTHING

-- name: api_archive
SELECT archive FROM api_archives WHERE name = $1 AND digest = $2

-- name: prune_api_archives
-- A deleted API's archives, unless one of its jobs is unfinished (it may still need one).
DELETE FROM api_archives WHERE name = $1 AND NOT EXISTS (
    SELECT 1 FROM jobs WHERE api_name = $1 AND status IN ({active_statuses})
)
