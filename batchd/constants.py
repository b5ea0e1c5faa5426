"""Every tunable number and fixed name in one place.

Defaults a user can change live in ``config.py``; these are the ones they should not
need to.
"""

from __future__ import annotations

# The release: the wheel's version (pyproject.toml reads it), /status, /openapi.json and
# batchd_build_info.
VERSION = "0.1.0"

DEFAULT_PORT = 8780
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_STATE_DIR = ".batchd"

DB_FILENAME = "batchd.sqlite3"
SCHEMA_VERSION = 5

# Worker pipe framing: a 4-byte big-endian length, then a UTF-8 JSON document.
FRAME_HEADER_BYTES = 4
MAX_FRAME_BYTES = 512 * 1024 * 1024
# Room in a frame for what goes around one batch payload (the grant's token and seq).
FRAME_ENVELOPE_BYTES = 1024 * 1024

# Environment variables a worker and its handler see.
ENV_WORKER_FD = "BATCHD_WORKER_FD"
ENV_URL = "BATCHD_URL"
ENV_TOKEN = "BATCHD_TOKEN"
# The daemon's `database` when its config sets none: a PostgreSQL URL.
ENV_DATABASE = "BATCHD_DATABASE"
ENV_API_NAME = "BATCHD_API_NAME"
ENV_JOB_ID = "BATCHD_JOB_ID"
ENV_WORKER_SLOT = "BATCHD_WORKER_SLOT"
ENV_LOG_FD = "BATCHD_LOG_FD"
ENV_MEMORY_LIMIT = "BATCHD_MEMORY_LIMIT"
# The cgroup v2 group a worker joins before anything else (batchd/cgroups.py).
ENV_CGROUP = "BATCHD_CGROUP"
# Set for a spare worker: it waits for a `launch` message (its directory and environment).
ENV_SPARE = "BATCHD_SPARE"
# A shared 8-byte word holding the sequence number of the batch a worker is handling.
ENV_PROGRESS_FD = "BATCHD_PROGRESS_FD"

# Job log records longer than this are dropped (Cortex's limit), with a warning line.
MAX_LOG_LINE_BYTES = 5 * 1024 * 1024

# The scheduler re-examines every job at least this often even when nothing wakes it.
SCHEDULER_IDLE_INTERVAL = 1.0
# Several daemons on one database: how often a node heartbeats, looks for silent nodes and
# for jobs admitted or ended elsewhere (a notification brings the last one sooner).
CLUSTER_SYNC_INTERVAL = 1.0
# A job whose workers are all taken on other nodes is asked about again after this long.
CLUSTER_CLAIM_RETRY = 1.0

# How often a `follow` log reader looks for new lines.
LOG_FOLLOW_POLL_INTERVAL = 0.2

# Seconds between retries of a write the store refused (disk full), doubling up to the max.
STORAGE_RETRY_INITIAL = 0.2
STORAGE_RETRY_MAX = 5.0

# After a checkpoint the WAL file is cut back to at most this many bytes.
WAL_SIZE_LIMIT = 64 * 1024 * 1024

# How often finished jobs past their retention are pruned, in seconds.
PRUNE_INTERVAL = 3600.0

# Rows deleted per transaction when pruning, and pages returned per vacuum step: small
# enough that the API never waits long for the write lock.
PRUNE_CHUNK_ROWS = 5000
VACUUM_STEP_PAGES = 2000

# Final worker counts are kept in memory for this many finished jobs.
FINISHED_JOBS_REMEMBERED = 1000

# A worker is handed as many batches per request as it handles in about this many
# seconds (judged by the job's batches so far), one at first, at most MAX_LEASE_BATCHES;
# and no more than a 1/LEASE_SHARE_DIVISOR share of the job per worker, so the tail of a
# job still spreads over every worker.
LEASE_TARGET_SECONDS = 0.05
MAX_LEASE_BATCHES = 8192
# ... and payloads of at most this many bytes in all (one batch whatever its size).
GRANT_MAX_BYTES = 16 * 1024 * 1024
LEASE_SHARE_DIVISOR = 4

# A worker reports the outcomes of a long grant at least this often.
PROGRESS_FLUSH_SECONDS = 0.01

# ... and at once when the results it holds reach this many bytes, so a report stays far
# below MAX_FRAME_BYTES (one result is at most MAX_RESULT_SIZE_CAP).
REPORT_FLUSH_BYTES = 16 * 1024 * 1024

# The largest max_result_size the daemon accepts: a report of one such result, plus up to
# REPORT_FLUSH_BYTES of others, must fit in a frame.
MAX_RESULT_SIZE_CAP = 256 * 1024 * 1024
DEFAULT_MAX_RESULT_SIZE = 64 * 1024 * 1024

# How long a job's on_job_complete may run before its worker is killed (seconds).
DEFAULT_ON_JOB_COMPLETE_TIMEOUT = 600.0

# A worker asks for its next grant halfway through one of at least this many batches.
# A grant holds LEASE_TARGET_SECONDS of work, so two or more means batches of at most half
# that: what prefetching holds back from idle workers at a job's tail is that little,
# while slow batches (one per grant) are never held back.
PREFETCH_MIN_BATCHES = 2

# A job's payloads are stored at admission as JSON arrays of at most this many batches
# each, and a batch gets a row of its own only when it is first leased.
CHUNK_BATCHES = 4096
# ... and of at most this many bytes (a larger batch gets a chunk of its own): SQLite
# refuses a value over 1e9 bytes, and the store decodes a whole chunk to lease from it.
CHUNK_MAX_BYTES = 4 * 1024 * 1024
# Jobs whose current chunk the store keeps decoded.
CHUNK_CACHE_JOBS = 8

# Rows fetched per query when streaming results or dead letters.
STREAM_PAGE_ROWS = 1000

# Exit code a worker uses when the Handler could not be loaded or constructed: the pool
# must not respawn it (gunicorn's WORKER_BOOT_ERROR idea).
WORKER_EXIT_INIT_FAILED = 3

# Exit code of a worker that hit its RLIMIT_AS memory bound ([compute] mem).
WORKER_EXIT_OUT_OF_MEMORY = 4

# A worker's cgroup is removed once its last process is gone: checked this often, for
# at most this long (a killed process takes a moment to leave).
CGROUP_EMPTY_POLL_SECONDS = 0.02
CGROUP_EMPTY_TIMEOUT_SECONDS = 5.0
# Each worker's workspace under <state>/<WORKSPACES_DIR>: the project copy it runs in, and
# its TMPDIR.
WORKSPACES_DIR = "work"
WORKSPACE_PROJECT = "project"
WORKSPACE_TMP = "tmp"
# Snapshots of which a copy is kept prepared ahead of need (most recently used first).
WORKSPACES_READY_MAX = 4
# A workspace's disk use is measured at least this many seconds apart, and never more
# often than keeps the measuring under 1/WORKSPACE_CHECK_COST_RATIO of the time.
WORKSPACE_CHECK_INTERVAL = 1.0
WORKSPACE_CHECK_COST_RATIO = 50
# Tries at removing a workspace whose processes may still be dying.
WORKSPACE_REMOVE_TRIES = 5

# A worker's exit is watched this often once its channel is closed; its output pipes are
# read this long after the exit, then closed (a process it started may hold them open).
EXIT_POLL_INTERVAL = 0.02
OUTPUT_DRAIN_GRACE = 2.0
