-- Schema 5: when each batch succeeded, so that a job's throughput can be charted from the
-- store at any time, after a restart too (a failed attempt has its time in failures). The
-- column is set by the statements that mark successes, on the database's clock (one
-- clock for every node); batches that succeeded before it existed have none.

ALTER TABLE batches ADD COLUMN finished_at double precision;
