-- Schema 3 numbers a chunk by the batches before it, not by its index: chunks are bounded
-- by bytes too, so they no longer hold a fixed count. Every schema 2 chunk held 4096.
-- Through negative ids, so that no new id is one still taken while the rows move.

UPDATE chunks SET id = -((id & ~4294967295) | ((id & 4294967295) * 4096))
WHERE id & 4294967295 > 0;
UPDATE chunks SET id = -id WHERE id < 0;
