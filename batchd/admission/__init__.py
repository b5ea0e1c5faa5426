"""Admission: a job body becomes a stored job and its batches; retry; stop.

``service`` is the entry point (:class:`~batchd.admission.service.Admission`: submit, retry,
stop, delete an API). ``job_body`` is the pydantic model of ``POST /batch/<api>`` and its
parsing, ``json_text`` the JSON rules admission reads and writes by, ``input_files`` the
files a job names, ``s3_files`` the S3 objects among them (boto3, optional), ``planning``
the split into batch chunks, and ``globs`` the path patterns (Cortex's). Refusals are
domain errors (:mod:`batchd.errors`), never HTTP.

May import scheduler, observe, store, config, constants and errors. Never aiohttp or
:mod:`batchd.http`, which calls it; nor :mod:`batchd.apis`, its sibling: the service takes
the registry through a protocol.
"""
