-- Schema 5: pausing a job or an API. A job's `paused` holds flags of who paused it
-- (1: the job itself, 2: its API); while one is set, no batch of it is leased. Its
-- timeout does not run while paused: `paused_at` is when the pause began and
-- `paused_seconds` the time it spent paused before. An API's pause is a row of
-- `paused_apis`, so that the jobs admitted while it holds are paused too.

ALTER TABLE jobs ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN paused_at REAL;
ALTER TABLE jobs ADD COLUMN paused_seconds REAL NOT NULL DEFAULT 0;

CREATE TABLE paused_apis (
    name       TEXT PRIMARY KEY,
    paused_at  REAL NOT NULL
);
