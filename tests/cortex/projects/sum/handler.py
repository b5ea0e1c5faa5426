import json
import os
import re

import boto3


class Handler:
    def __init__(self, config, job_spec):
        destination = config.get("dest_s3_dir", "")
        if not destination:
            raise Exception("'dest_s3_dir' field was not provided in job submission")
        self.s3 = boto3.client("s3")
        self.bucket, prefix = re.match("s3://(.+?)/(.+)", destination).groups()
        self.key = os.path.join(prefix, job_spec["job_id"])
        self.sums = []

    def handle_batch(self, payload, batch_id):
        for numbers in payload:
            self.sums.append(sum(numbers))

    def on_job_complete(self):
        self.s3.put_object(Bucket=self.bucket, Key=f"{self.key}.json", Body=json.dumps(self.sums))
