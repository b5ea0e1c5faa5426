-- Schema 2: each job's batch counts live on its row, moved by the transactions that move
-- its batches, so a status read is one row. An existing job is recounted from its rows,
-- every one of which it has (`materialized`). Payloads are admitted in chunks, and a batch
-- gets its row when first leased; only queued and dead batches are indexed by state.

ALTER TABLE jobs ADD COLUMN queued_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN leased_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN succeeded_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN dead_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN failure_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN duration_sum REAL NOT NULL DEFAULT 0;
-- Batches 1 to `materialized` have rows in `batches`, the rest are still only in `chunks`.
ALTER TABLE jobs ADD COLUMN materialized INTEGER NOT NULL DEFAULT 0;

-- A job's batches are the ids key << 32 to (key << 32) | 0xffffffff.
UPDATE jobs SET
    queued_count = (SELECT count(*) FROM batches WHERE state = 'queued'
        AND id BETWEEN key << 32 AND (key << 32) | 4294967295),
    leased_count = (SELECT count(*) FROM batches WHERE state = 'leased'
        AND id BETWEEN key << 32 AND (key << 32) | 4294967295),
    succeeded_count = (SELECT count(*) FROM batches WHERE state = 'succeeded'
        AND id BETWEEN key << 32 AND (key << 32) | 4294967295),
    dead_count = (SELECT count(*) FROM batches WHERE state = 'dead'
        AND id BETWEEN key << 32 AND (key << 32) | 4294967295),
    failure_count = (SELECT count(*) FROM failures
        WHERE batch BETWEEN key << 32 AND (key << 32) | 4294967295),
    duration_sum = coalesce((SELECT sum(duration) FROM batches WHERE state = 'succeeded'
        AND id BETWEEN key << 32 AND (key << 32) | 4294967295), 0);
UPDATE jobs SET materialized = total_batch_count;

-- A batch on the usual path, leased then succeeded, touches no index at all; leased ones
-- are found through their job's range.
DROP INDEX batches_by_state;
CREATE INDEX batches_queued ON batches (id) WHERE state = 'queued';
CREATE INDEX batches_dead ON batches (id) WHERE state = 'dead';

-- A job's payloads as admitted: JSON arrays of at most CHUNK_BATCHES batch payloads and
-- about CHUNK_MAX_BYTES each. The id packs the job's key and the number of the job's
-- batches before the chunk (key << 32 | before, since schema 3): a chunk holds batches
-- before + 1 onwards.
CREATE TABLE chunks (id INTEGER PRIMARY KEY, payloads BLOB NOT NULL);
