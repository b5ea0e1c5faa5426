-- Schema 2: several daemons (nodes) share the queue.
--
-- A node registers a row each time it starts; the row's id is the high bits of every
-- lease token it hands out, so a node's leases can be found by their token alone. Times
-- here are the database's clock (clock_timestamp), so the nodes' own clocks never
-- decide whether one of them is silent.

CREATE TABLE nodes (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text             NOT NULL,
    -- Which machine and state directory: a restart of the same node finds its own rows.
    instance     text             NOT NULL,
    pid          integer          NOT NULL,
    max_workers  integer          NOT NULL,
    gpus         integer          NOT NULL,
    started_at   double precision NOT NULL,
    heartbeat_at double precision NOT NULL,
    -- Set once: by the node itself when it stops, or by another node's sweep when it
    -- fell silent past node_timeout. A node that finds its row ended is fenced.
    ended_at     double precision,
    end_reason   text
);
CREATE INDEX nodes_live ON nodes (heartbeat_at) WHERE ended_at IS NULL;

-- The worker slots a job holds on each node: a job's `workers` is its total over nodes.
CREATE TABLE job_workers (
    job_key bigint  NOT NULL,
    node    bigint  NOT NULL,
    workers integer NOT NULL,
    PRIMARY KEY (job_key, node)
);
CREATE INDEX job_workers_by_node ON job_workers (node);

-- The node that runs on_job_complete: claimed once per job, across the cluster.
ALTER TABLE jobs ADD COLUMN hook_node bigint;
