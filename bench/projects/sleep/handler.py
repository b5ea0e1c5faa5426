"""W3: sleeps `ms_per_batch` per batch (waiting on I/O, not the CPU: spreads over nodes)."""

import time


class Handler:
    def __init__(self, config, job_spec):
        self.seconds = float(config.get("ms_per_batch", 20.0)) / 1000

    def handle_batch(self, payload, batch_id):
        time.sleep(self.seconds)
        return None
