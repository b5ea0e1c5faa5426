-- Schema 1 of the PostgreSQL store: the SQLite store's schema as of its version 3, in
-- one step. Migrations are history: a file is never edited once released (the
-- jobs_active list below is statuses.ACTIVE_STATUSES as then).
--
-- A batch's id packs its job's key and its sequence number (key << 32 | seq), so all
-- batches of a job are one contiguous id range and need no job_id column. A chunk's id
-- packs the key and the number of the job's batches before it.
--
-- Errors and tracebacks are a handler's text, which may hold what PostgreSQL's text cannot
-- (a NUL): they are stored as their UTF-8 bytes.

CREATE TABLE apis (
    name        text             NOT NULL,
    version     integer          NOT NULL,
    spec        text             NOT NULL,
    dotenv      text             NOT NULL,
    created_at  double precision NOT NULL,
    deleted_at  double precision,
    PRIMARY KEY (name, version)
);

CREATE TABLE jobs (
    key               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Byte order: ids sort by age whatever the database's collation.
    job_id            text COLLATE "C" NOT NULL UNIQUE,
    api_name          text             NOT NULL,
    api_version       integer          NOT NULL,
    kind              text             NOT NULL,
    status            text             NOT NULL,
    workers           integer          NOT NULL,
    config            text             NOT NULL,
    timeout           double precision,
    batch_timeout     double precision,
    max_receive_count integer          NOT NULL,
    priority          integer          NOT NULL,
    total_batch_count integer          NOT NULL,
    created_at        double precision NOT NULL,
    end_time          double precision,
    error             bytea,
    has_on_complete   boolean,
    retry_of          text,
    pruned_at         double precision,
    queued_count      integer          NOT NULL DEFAULT 0,
    leased_count      integer          NOT NULL DEFAULT 0,
    succeeded_count   integer          NOT NULL DEFAULT 0,
    dead_count        integer          NOT NULL DEFAULT 0,
    failure_count     integer          NOT NULL DEFAULT 0,
    duration_sum      double precision NOT NULL DEFAULT 0,
    -- Batches 1 to `materialized` have rows in `batches`, the rest are only in `chunks`.
    materialized      integer          NOT NULL DEFAULT 0
);
CREATE INDEX jobs_by_api ON jobs (api_name, created_at);
CREATE INDEX jobs_active ON jobs (status) WHERE status IN ('pending', 'enqueuing', 'running');

CREATE TABLE batches (
    id               bigint PRIMARY KEY,
    state            text    NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    lease_token      bigint,
    lease_expires_at double precision,
    duration         double precision,
    payload          bytea   NOT NULL,
    result           bytea
);
-- A batch on the usual path, leased then succeeded, touches neither index.
CREATE INDEX batches_queued ON batches (id) WHERE state = 'queued';
CREATE INDEX batches_dead ON batches (id) WHERE state = 'dead';

CREATE TABLE failures (
    batch      bigint           NOT NULL,
    attempt    integer          NOT NULL,
    error      bytea            NOT NULL,
    traceback  bytea,
    failed_at  double precision NOT NULL
);
CREATE INDEX failures_by_batch ON failures (batch, attempt);

CREATE TABLE chunks (id bigint PRIMARY KEY, payloads bytea NOT NULL);
