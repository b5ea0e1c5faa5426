"""The bundled example: greets each item, labelling numbers from values.json."""

import json
import os
import time


class Handler:
    def __init__(self, config, job_spec):
        # Project files are the worker's current directory.
        with open("values.json") as values_file:
            self.labels = json.load(values_file)["labels"]
        self.greeting = config.get("greeting", "hello")
        self.punctuation = os.environ.get("HELLO_PUNCTUATION", "")
        self.job_id = job_spec["job_id"]
        # Seconds each batch takes: a job slow enough to watch, or to stop by hand.
        self.sleep = float(config.get("sleep", 0))

    def handle_batch(self, payload, batch_id):
        time.sleep(self.sleep)
        # The returned value is stored as this batch's result.
        return [f"{self.greeting} {self.labels.get(str(item), item)}{self.punctuation}"
                for item in payload]

    def on_job_complete(self, status):
        metrics = status["batch_metrics"]
        print(f"job {self.job_id} done: {metrics['succeeded']} batches succeeded")
