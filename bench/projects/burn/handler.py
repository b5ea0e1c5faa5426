"""W2: burns `ms_per_item` of this process's CPU time per item (a busy loop)."""

import time


class Handler:
    def __init__(self, config, job_spec):
        self.seconds_per_item = float(config.get("ms_per_item", 5.0)) / 1000

    def handle_batch(self, payload, batch_id):
        for _ in payload:
            until = time.process_time() + self.seconds_per_item
            while time.process_time() < until:
                pass
        return None
