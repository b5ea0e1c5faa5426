"""batchd.worker.models: the model handlers (``[handler] type = "onnx" | "tensorflow"``).

Owns finding an API's models on disk (``discovery``: name, versions, path; shared with the
deploy-time check in ``batchd.apis.model_paths``), the clients a Handler is given
(``client``: the model table and its least-recently-used cache; ``onnx`` and
``tensorflow``: the runtimes), the built-in handler of an API with no handler file
(``builtin``) and building all of it in a worker from the launch environment (``setup``).

Standard library only, like the rest of the worker, until a client imports its runtime
(onnxruntime, tensorflow, numpy) inside the worker, from the API's own interpreter: the
daemon never has them. Only the name of the environment variable is defined here.
"""

# The JSON of an API's model settings ({"type", "models", "gpus"}), set by the daemon at
# launch for the model handler types only.
ENV_MODELS = "BATCHD_MODELS"
