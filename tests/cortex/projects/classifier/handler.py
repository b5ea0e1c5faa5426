import json
import os
import re

import boto3
import numpy as np
import onnxruntime as rt
from cortex_internal.lib.log import logger


def split_s3_path(path):
    return re.match("s3://(.+?)/(.+)", path).groups()


class Handler:
    def __init__(self, config, job_spec, metrics_client):
        if len(config.get("dest_s3_dir", "")) == 0:
            raise Exception("'dest_s3_dir' field was not provided in job submission")
        self.metrics = metrics_client
        self.s3 = boto3.client("s3")

        # The model comes from S3 into the worker's current directory.
        model_bucket, model_key = split_s3_path(config["model_path"])
        self.s3.download_file(model_bucket, model_key, "model.onnx")
        self.session = rt.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        with open(os.environ["CLASSIFIER_LABELS"]) as labels:
            self.labels = json.load(labels)

        self.bucket, prefix = split_s3_path(config["dest_s3_dir"])
        self.key = os.path.join(prefix, job_spec["job_id"])
        self.classified = 0

    def handle_batch(self, payload, batch_id):
        images = []
        for image_url in payload:
            bucket, key = split_s3_path(image_url)
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            images.append(np.asarray(json.loads(body), dtype=np.float32))

        scores = self.session.run([self.output_name], {self.input_name: np.stack(images)})[0]
        predicted = np.argmax(scores, axis=1)
        results = [
            {"url": payload[i], "class": self.labels[int(index)]}
            for i, index in enumerate(predicted)
        ]
        self.s3.put_object(
            Bucket=self.bucket, Key=f"{self.key}/{batch_id}.json", Body=json.dumps(results)
        )
        self.classified += len(results)
        self.metrics.increment("images_classified", value=len(results), tags={"model": "linear"})
        self.metrics.histogram("batch_images", len(results))
        logger.info(f"classified {len(results)} images in batch {batch_id}")

    def on_job_complete(self):
        summary = {"classified_by_last_worker": self.classified}
        key = f"{self.key}/done.json"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=json.dumps(summary))
