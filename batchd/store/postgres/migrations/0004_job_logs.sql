-- Schema 4: the job logs of a shared database. Every node's workers' lines of a job go to
-- one table, so any node reads them all, and a lost node's lines stay readable.
--
-- `id` is the merged order: a job's lines are committed in id order (a flush locks the
-- job, see job_logs.sql), so a reader that goes on after the last id it saw skips none.
-- A line is the JSON record and its newline, as in a log file, stored as bytes (bytea):
-- a handler's text may hold what text cannot (a NUL).

CREATE TABLE job_logs (
    job   bigint NOT NULL,
    id    bigint GENERATED ALWAYS AS IDENTITY,
    node  text   NOT NULL,
    line  bytea  NOT NULL,
    PRIMARY KEY (job, id)
);
