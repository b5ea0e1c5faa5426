"""Deployed APIs, server side: the project spec (``spec``: ``batchd.toml`` validated in full;
``cortex_spec``: a Cortex ``cortex.yaml`` translated into it),
unpacking an uploaded archive into a read-only snapshot (``archive``), the import check at
deploy (``handler_check``), each API's venv of its requirements.txt (``venvs``) and the
registry of APIs and their versions (``registry``).

Sits below ``http`` and ``daemon`` and above ``scheduler``; it may import ``pool`` (how a
worker is launched), ``store``, ``worker.probe`` and the bottom modules (``config``,
``constants``, ``errors``, ``packing``). Packing a project folder is client side and lives in
:mod:`batchd.packing`. Nothing is imported here, so importing one module of the package pulls
in only what that module needs.
"""
