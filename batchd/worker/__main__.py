"""``python -m batchd.worker``: how the daemon starts a worker process."""

import sys

from batchd.worker.main import main

sys.exit(main())
