"""The HTTP API (aiohttp): parse a request, authenticate it, call a service, render the answer.

Owns the routes (``*_routes.py``), reading bodies and query parameters (``body``,
``encoding``), tokens (``auth``), connection limits (``connections``), the response models
and the OpenAPI document (``schemas``, ``openapi``), and the one mapping of domain errors to
status codes (``errors``). Decisions live below: a route calls :mod:`batchd.admission`
(submit, retry, stop), :mod:`batchd.apis` (deploy) or the store's reads, and never reaches
into the scheduler's internals.

May import every lower layer (admission, apis, scheduler, pool, observe, store, config,
constants, errors); only the daemon (and nothing else) imports it, except that
``batchd.http.errors`` is standard library only, for the client's own refusals.
"""
