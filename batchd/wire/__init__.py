"""batchd.wire: the daemon <-> worker channel, the bottom layer.

Owns the framing (``framing``: length-prefixed JSON over the worker's socketpair), every
message of the channel, defined once (``messages``: the table of ops and fields, the
grant splice, the outcomes a worker reports), batch ids (``ids``) and text UTF-8 can
always carry (``textsafe``).

Workers import it, under an API's own interpreter: standard library only, and of batchd
only ``batchd.constants`` and ``batchd.wire`` itself. Nothing is imported here, so that
importing one module of the package loads no other.
"""
