-- Schema version 3. Applied in one transaction when PRAGMA user_version is 0 (a version 1
-- database gains the jobs' counter columns, recounted from its batches, and a version 2 one
-- gets its chunks renumbered by the batches before them).
--
-- A batch's id packs its job's key and its sequence number (key << 32 | seq), so all
-- batches of a job are one contiguous rowid range and need no job_id column.

CREATE TABLE apis (
    name        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    spec        TEXT    NOT NULL,
    dotenv      TEXT    NOT NULL,
    created_at  REAL    NOT NULL,
    deleted_at  REAL,
    PRIMARY KEY (name, version)
);

-- The *_count columns and duration_sum are the job's batch counts, moved by the same
-- transactions that move its batches, so a status read is one row. Batches 1 to
-- `materialized` have rows in `batches`, and the rest are still only in `chunks`.
CREATE TABLE jobs (
    key               INTEGER PRIMARY KEY,
    job_id            TEXT    NOT NULL UNIQUE,
    api_name          TEXT    NOT NULL,
    api_version       INTEGER NOT NULL,
    kind              TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    workers           INTEGER NOT NULL,
    config            TEXT    NOT NULL,
    timeout           REAL,
    batch_timeout     REAL,
    max_receive_count INTEGER NOT NULL,
    priority          INTEGER NOT NULL,
    total_batch_count INTEGER NOT NULL,
    created_at        REAL    NOT NULL,
    end_time          REAL,
    error             TEXT,
    has_on_complete   INTEGER,
    retry_of          TEXT,
    pruned_at         REAL,
    queued_count      INTEGER NOT NULL DEFAULT 0,
    leased_count      INTEGER NOT NULL DEFAULT 0,
    succeeded_count   INTEGER NOT NULL DEFAULT 0,
    dead_count        INTEGER NOT NULL DEFAULT 0,
    failure_count     INTEGER NOT NULL DEFAULT 0,
    duration_sum      REAL    NOT NULL DEFAULT 0,
    materialized      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_by_api ON jobs (api_name, created_at);
CREATE INDEX jobs_active ON jobs (status) WHERE status IN ('pending', 'enqueuing', 'running');

CREATE TABLE batches (
    id               INTEGER PRIMARY KEY,
    state            TEXT    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    lease_token      INTEGER,
    lease_expires_at REAL,
    duration         REAL,
    payload          BLOB    NOT NULL,
    result           BLOB
);
-- Only the batches someone looks for by state are indexed: queued ones (re-queued after a
-- failure) and dead ones. A batch on the usual path, leased then succeeded, touches no
-- index at all. Leased ones are found through their job's range.
CREATE INDEX batches_queued ON batches (id) WHERE state = 'queued';
CREATE INDEX batches_dead ON batches (id) WHERE state = 'dead';

CREATE TABLE failures (
    batch      INTEGER NOT NULL,
    attempt    INTEGER NOT NULL,
    error      TEXT    NOT NULL,
    traceback  TEXT,
    failed_at  REAL    NOT NULL
);
CREATE INDEX failures_by_batch ON failures (batch, attempt);

-- A job's payloads as admitted: JSON arrays of at most CHUNK_BATCHES batch payloads and
-- about CHUNK_MAX_BYTES each. The id packs the job's key and the number of the job's
-- batches before the chunk (key << 32 | before): a chunk holds batches before + 1 onwards.
CREATE TABLE chunks (
    id       INTEGER PRIMARY KEY,
    payloads BLOB    NOT NULL
);
