"""Every message of the daemon <-> worker channel, defined once (standard library only).

Each message is one record here, a dataclass whose fields are the message's (slots, not
frozen: a frozen one costs three times as much to make, and a record lives for a message):
``encode()`` gives the frame to send (a field with a default is left out at its default),
``decode(message)`` takes the object a frame decoded to (``framing.decode``) and checks
its op and the types of its fields, raising ``framing.BadFrame`` on anything else. The
daemon reads what a worker sends with ``from_worker``; the worker takes the orders it
expects by their ``op``.

    dir  op           fields                              meaning
    ---  -----------  ----------------------------------  --------------------------------------
    d>w  launch       cwd: str, env: {str: str}           A spare worker (started before its job,
                                                          ENV_SPARE set) takes its job's directory
                                                          and environment. First, and only to a
                                                          spare.
    d>w  init         job_id: str,                        Load the handler file, construct
                      max_result_bytes: int | null,       Handler(config, job_spec). job_id, when
                      handler_path: str, config: {},      missing or empty, is job_spec's.
                      job_spec: {}
    w>d  ready        has_on_complete: bool               Constructed; whether the Handler has
                                                          on_job_complete. A `next` with token 0
                                                          and no outcomes follows: the first ask.
    w>d  init_failed  error: str, traceback: str          It could not be; the worker exits with
                                                          WORKER_EXIT_INIT_FAILED.
    d>w  batches      token: int,                         A grant: batches leased under one lease
                      batches: [[seq: int, payload]]      token, to run in order. EMPTY_GRANT
                                                          (token 0, no batches) answers a `more`
                                                          when nothing could be leased.
    w>d  progress     token: int, done: [success],        Outcomes of grant `token` so far: every
                      failed: [failure], more?: true,     PROGRESS_FLUSH_SECONDS, at once after a
                      metrics?: {}                        failure or REPORT_FLUSH_BYTES of
                                                          results. `more` (halfway through a grant
                                                          of PREFETCH_MIN_BATCHES or more) asks for
                                                          the next grant; the daemon always
                                                          answers it, with batches or EMPTY_GRANT.
    w>d  next         token: int, done: [success],        The last outcomes of grant `token`,
                      failed: [failure], metrics?: {}     which is over; asks for the next grant.
    d>w  complete     status: {}                          Run on_job_complete(status): the job's
                                                          status as GET returns it.
    w>d  completed    ok: bool, error?: str,              on_job_complete returned (ok), or raised
                      traceback?: str, metrics?: {}       (with error and traceback).
    d>w  exit         -                                   Exit 0.

An outcome (in `done` and `failed`) is one batch of the grant:

    success  [seq: int, duration: float]              handled, no result (None)
             [seq: int, duration: float, result]      handled, with a result (any JSON but null)
    failure  {"seq": int, "duration": float,          handle_batch raised, or its result could
              "error": str, "traceback": str | null}  not be sent

A duration is in seconds, and always a float: JSON keeps the point of 1.0.

``metrics`` is what the handler recorded with ``metrics_client`` since the worker's last
report (batchd.wire.metrics has its shape); it is left out when there is none.

The worker builds them with ``success()`` and ``failure()``; the daemon reads them, once,
as ``Success`` and ``Failed`` tuples (``Report.successes()``, ``Report.failures()``).

The grant is the one message whose payloads the daemon never decodes: they are stored as
compact JSON text, and ``Batches.splice`` puts them into the frame as bytes.

The daemon's side, in short: it sends ``Launch(cwd, env).encode()``, ``Init(...).encode()``,
``Batches.splice(leases)`` or ``EMPTY_GRANT``, ``Complete(status).encode()`` and
``EXIT_FRAME``, and reads ``from_worker(message)``. A report (``Progress`` or ``Next``, both
a ``Report``) asks for a grant when it is a ``Next`` or its ``more`` is set; ``seqs()`` are
the batches it covers, ``successes()`` what ``Store.succeed`` takes (``store.base.Success``
is ``Success``), ``failures()`` the failures, ``seconds()`` the time they all took.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar, NamedTuple, Protocol, Self

from batchd.wire.framing import BadFrame, encode, frame

# The types a field's annotation may name, as JSON decodes them.
_KINDS: dict[str, type] = {"str": str, "int": int, "bool": bool, "dict": dict, "list": list}
_REQUIRED: Any = MISSING


class _Field(NamedTuple):
    name: str
    kind: type
    nullable: bool
    # Left out of a frame when at its default; _REQUIRED when it has none.
    default: Any


class _Record:
    """A message: its fields are its dataclass fields, encoded and checked from their
    annotations (``str``, ``int``, ``bool``, ``dict[...]``, ``list[...]``, ``... | None``;
    a bool is no int here: JSON decodes to exact types)."""

    __slots__ = ()
    op: ClassVar[str]
    _fields: ClassVar[tuple[_Field, ...]]

    def encode(self) -> bytes:
        message: dict[str, Any] = {"op": self.op}
        for name, _, _, default in self._fields:
            value = getattr(self, name)
            if default is _REQUIRED or value != default:
                message[name] = value
        return encode(message)

    @classmethod
    def decode(cls, message: Mapping[str, Any]) -> Self:
        if message.get("op") != cls.op:
            raise BadFrame(f"a {message.get('op')!r} message where {cls.op!r} was expected")
        values = []
        # _checked's test, inline (this runs for every message); it raises on a bad value.
        for field in cls._fields:
            value = message.get(field.name, field.default)
            if type(value) is not field.kind and not (field.nullable and value is None):
                _checked(message, field)
            values.append(value)
        record = cls(*values)
        record._check()
        return record

    def _check(self) -> None:
        """What a record checks beyond its fields' types."""


def _checked(message: Mapping[str, Any], field: _Field, holder: str = "") -> Any:
    """`message`'s value for `field` (its default when left out), of its type; `holder`
    names what holds it, when that is not a message."""
    value = message.get(field.name, field.default)
    if type(value) is field.kind or (field.nullable and value is None):
        return value
    holder = holder or f"a {message.get('op')!r} message"
    what = "without" if value is _REQUIRED else f"with a {type(value).__name__} as"
    raise BadFrame(f"{holder} {what} {field.name!r}, not a {field.kind.__name__}")


def _shape(record: type[_Record]) -> tuple[_Field, ...]:
    shape = []
    for field in fields(record):  # type: ignore[arg-type]
        annotation = str(field.type)
        nullable = annotation.endswith(" | None")
        kind = _KINDS[annotation.removesuffix(" | None").split("[")[0]]
        shape.append(_Field(field.name, kind, nullable, field.default))
    return tuple(shape)


def _shown(value: Any) -> str:
    """`value` as an error message shows it: a payload can be megabytes."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


# -- daemon -> worker ----------------------------------------------------------------------


@dataclass(slots=True)
class Launch(_Record):
    op: ClassVar[str] = "launch"
    cwd: str
    env: dict[str, str]

    def _check(self) -> None:
        if not all(type(value) is str for value in self.env.values()):
            raise BadFrame("a 'launch' message whose env holds a value that is not a str")


@dataclass(slots=True)
class Init(_Record):
    op: ClassVar[str] = "init"
    handler_path: str
    config: dict[str, Any]
    job_spec: dict[str, Any]
    # Empty: the job spec's.
    job_id: str = ""
    max_result_bytes: int | None = None

    def _check(self) -> None:
        if not self.job_id:
            self.job_id = str(self.job_spec.get("job_id", ""))


class Leased(Protocol):
    """A leased batch as the store hands it over (store.base.Lease)."""

    @property
    def seq(self) -> int: ...
    @property
    def token(self) -> int: ...
    @property
    def payload(self) -> bytes: ...


@dataclass(slots=True)
class Batches(_Record):
    """A grant. The daemon sends it with `splice`; the worker reads it with `decode`, which
    leaves the pairs to the loop that runs them: they come from the daemon, by the
    thousand, and a pair that is none fails the worker there (and checking each would
    cost every batch)."""

    op: ClassVar[str] = "batches"
    token: int
    # [seq, payload] pairs, payloads decoded.
    batches: list[list[Any]]

    @staticmethod
    def splice(leases: Sequence[Leased]) -> bytes:
        """The frame of a grant of `leases` (one lease token, at least one lease). Payloads
        are stored as compact JSON text: they go in as bytes, never decoded."""
        token = leases[0].token
        assert all(lease.token == token for lease in leases), "one grant, one token"
        items = b",".join(b"[%d,%s]" % (lease.seq, lease.payload) for lease in leases)
        return frame(b'{"op":"batches","token":%d,"batches":[%s]}' % (token, items))


@dataclass(slots=True)
class Complete(_Record):
    op: ClassVar[str] = "complete"
    status: dict[str, Any]


@dataclass(slots=True)
class Exit(_Record):
    op: ClassVar[str] = "exit"


# -- worker -> daemon ----------------------------------------------------------------------


@dataclass(slots=True)
class Ready(_Record):
    op: ClassVar[str] = "ready"
    has_on_complete: bool


@dataclass(slots=True)
class InitFailed(_Record):
    op: ClassVar[str] = "init_failed"
    error: str
    traceback: str


@dataclass(slots=True)
class Completed(_Record):
    op: ClassVar[str] = "completed"
    ok: bool
    # Set when on_job_complete raised (not ok).
    error: str | None = None
    traceback: str | None = None
    # What the handler recorded (batchd.wire.metrics); None: nothing.
    metrics: dict[str, Any] | None = None


def success(seq: int, duration: float, result: Any = None) -> list[Any]:
    """A success as the worker reports it; a None result is sent as none at all."""
    return [seq, duration] if result is None else [seq, duration, result]


def failure(seq: int, duration: float, error: str, traceback: str | None) -> dict[str, Any]:
    """A failure as the worker reports it."""
    return {"seq": seq, "duration": duration, "error": error, "traceback": traceback}


class Success(NamedTuple):
    """A success as the daemon stores it: the result as compact JSON text."""

    seq: int
    token: int
    duration: float
    result: bytes | None


class Failed(NamedTuple):
    """A failure as the daemon reads it."""

    seq: int
    token: int
    duration: float
    error: str
    traceback: str | None


# How a failure's fields are checked.
_FAILURE_FIELDS = (
    _Field("seq", int, False, _REQUIRED),
    _Field("duration", float, False, _REQUIRED),
    _Field("error", str, False, _REQUIRED),
    _Field("traceback", str, True, None),
)


@dataclass(slots=True)
class Report(_Record):
    """Outcomes of grant `token`: `progress` and `next` (see the table)."""

    token: int
    # Outcomes as on the wire (see success() and failure()); checked by decode.
    done: list[list[Any]]
    failed: list[dict[str, Any]]
    # What the handler recorded (batchd.wire.metrics); None: nothing.
    metrics: dict[str, Any] | None = None

    def _check(self) -> None:
        # A worker runs a handler's code, which can reach the channel: all is checked.
        # Durations are floats: the difference of two clock readings, and JSON keeps
        # the point ("1.0").
        for outcome in self.done:
            if (
                type(outcome) is not list
                or not 2 <= len(outcome) <= 3
                or type(outcome[0]) is not int
                or type(outcome[1]) is not float
            ):
                raise BadFrame(f"a success reported as {_shown(outcome)}")
        for reported in self.failed:
            if type(reported) is not dict:
                raise BadFrame(f"a failure reported as {_shown(reported)}")
            for field in _FAILURE_FIELDS:
                _checked(reported, field, "a failure")

    def successes(self) -> list[Success]:
        token = self.token
        return [
            Success(outcome[0], token, outcome[1], _json_bytes(outcome[2]))
            if len(outcome) > 2
            else Success(outcome[0], token, outcome[1], None)
            for outcome in self.done
        ]

    def failures(self) -> list[Failed]:
        token = self.token
        return [
            Failed(f["seq"], token, f["duration"], f["error"], f.get("traceback"))
            for f in self.failed
        ]

    def seqs(self) -> set[int]:
        """The batches this report is about."""
        seqs = {outcome[0] for outcome in self.done}
        if self.failed:
            seqs.update([f["seq"] for f in self.failed])
        return seqs

    def seconds(self) -> float:
        """The time its batches took, together."""
        seconds = sum([outcome[1] for outcome in self.done])
        if self.failed:
            seconds += sum([f["duration"] for f in self.failed])
        return float(seconds)


@dataclass(slots=True)
class Progress(Report):
    op: ClassVar[str] = "progress"
    # Halfway through the grant: asks for the next.
    more: bool = False


@dataclass(slots=True)
class Next(Report):
    op: ClassVar[str] = "next"


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


for _record in (
    Launch,
    Init,
    Batches,
    Complete,
    Exit,
    Ready,
    InitFailed,
    Completed,
    Progress,
    Next,
):
    _record._fields = _shape(_record)

FromWorker = Ready | InitFailed | Progress | Next | Completed
_FROM_WORKER: dict[str, Callable[[Mapping[str, Any]], FromWorker]] = {
    record.op: record.decode for record in (Ready, InitFailed, Progress, Next, Completed)
}


def from_worker(message: Mapping[str, Any]) -> FromWorker:
    """What a worker sent, checked; BadFrame for an op a worker does not send."""
    op = message.get("op")
    decode = _FROM_WORKER.get(op) if type(op) is str else None
    if decode is None:
        raise BadFrame(f"unknown op {op!r} from worker")
    return decode(message)


EXIT_FRAME = Exit().encode()
# The answer to a `more` when nothing could be leased.
EMPTY_GRANT = Batches(0, []).encode()
