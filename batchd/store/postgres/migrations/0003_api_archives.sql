-- Schema 3: each API version's project archive, as uploaded. Several daemons share this
-- database: a node that lacks a version's snapshot unpacks it from here on first use and
-- checks it against the digest in the version's spec. An archive is written in the
-- transaction that adds its version; deleting an API drops the archives of its versions
-- that no unfinished job still runs.
CREATE TABLE api_archives (
    name     text    NOT NULL,
    version  integer NOT NULL,
    archive  bytea   NOT NULL,
    PRIMARY KEY (name, version),
    FOREIGN KEY (name, version) REFERENCES apis (name, version)
);
-- A project arrives gzip'd (batchd.packing): stored out of line as it is, not compressed
-- again.
ALTER TABLE api_archives ALTER COLUMN archive SET STORAGE EXTERNAL;
