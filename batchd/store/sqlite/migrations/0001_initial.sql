-- Schema 1: the tables, a row per batch from admission on. Migrations are history: a
-- database holds what they made, so a file is never edited once released (the
-- jobs_active list below is statuses.ACTIVE_STATUSES as then; tests tie the two).
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
    pruned_at         REAL
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
CREATE INDEX batches_by_state ON batches (state, id);

CREATE TABLE failures (
    batch      INTEGER NOT NULL,
    attempt    INTEGER NOT NULL,
    error      TEXT    NOT NULL,
    traceback  TEXT,
    failed_at  REAL    NOT NULL
);
CREATE INDEX failures_by_batch ON failures (batch, attempt);
