"""W1: a handler that does nothing."""


class Handler:
    def __init__(self, config, job_spec):
        pass

    def handle_batch(self, payload, batch_id):
        return None
