-- Deployed API versions: a deletion marks every version of the name deleted.

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
INSERT INTO api_archives (name, version, archive) VALUES ($1, $2, $3)

-- name: api_archive
SELECT archive FROM api_archives WHERE name = $1 AND version = $2

-- name: prune_api_archives
-- A deleted API's archives, but those of versions an unfinished job still runs.
DELETE FROM api_archives a WHERE a.name = $1 AND NOT EXISTS (
    SELECT 1 FROM jobs j WHERE j.api_name = a.name AND j.api_version = a.version
    AND j.status IN ({active_statuses})
)
