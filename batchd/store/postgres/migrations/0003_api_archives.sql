-- Schema 3: the project archives of deployed APIs, as uploaded, by the digest of the
-- snapshot they unpack to (the `digest` of a version's spec). Several daemons share this
-- database: a node that lacks a version's snapshot unpacks its archive from here on first
-- use and checks the result against that digest. An archive is saved before the version
-- that names it is added; deleting an API drops its archives once none of its jobs is
-- unfinished.
CREATE TABLE api_archives (
    name     text  NOT NULL,
    digest   text  NOT NULL,
    archive  bytea NOT NULL,
    PRIMARY KEY (name, digest)
);
-- A project arrives gzip'd (batchd.packing): stored out of line as it is, not compressed
-- again.
ALTER TABLE api_archives ALTER COLUMN archive SET STORAGE EXTERNAL;
