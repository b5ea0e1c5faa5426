"""The worker's helpers, the channel framing, and a real worker process on a socketpair."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchd.constants import (
    ENV_WORKER_FD,
    FRAME_HEADER_BYTES,
    MAX_FRAME_BYTES,
    WORKER_EXIT_INIT_FAILED,
)
from batchd.wire.framing import (
    BadFrame,
    BlockingChannel,
    ChannelClosed,
    encode,
    frame,
    frame_length,
)
from batchd.worker.loading import (
    call_with_declared,
    describe_exception,
    handler_frames,
    load_handler_class,
)
from tests.conftest import REPO

AVAILABLE = {"payload": [1, 2], "batch_id": "job-1"}


# --- call_with_declared --------------------------------------------------------------------


def test_passes_only_declared_parameters() -> None:
    def payload_only(payload: Any) -> Any:
        return ("payload_only", payload)

    def both(batch_id: Any, payload: Any) -> Any:
        return ("both", payload, batch_id)

    def nothing() -> Any:
        return "nothing"

    assert call_with_declared(payload_only, **AVAILABLE) == ("payload_only", [1, 2])
    assert call_with_declared(both, **AVAILABLE) == ("both", [1, 2], "job-1")
    assert call_with_declared(nothing, **AVAILABLE) == "nothing"


def test_var_keyword_receives_everything() -> None:
    def anything(**kwargs: Any) -> Any:
        return kwargs

    def payload_and_rest(payload: Any, **rest: Any) -> Any:
        return payload, rest

    assert call_with_declared(anything, **AVAILABLE) == AVAILABLE
    assert call_with_declared(payload_and_rest, **AVAILABLE) == ([1, 2], {"batch_id": "job-1"})


def test_keyword_only_and_defaults() -> None:
    def keyword_only(*, batch_id: Any, extra: str = "default") -> Any:
        return batch_id, extra

    assert call_with_declared(keyword_only, **AVAILABLE) == ("job-1", "default")


def test_missing_required_parameter_raises() -> None:
    def wants_more(payload: Any, model: Any) -> Any:
        return payload, model

    with pytest.raises(TypeError, match="model"):
        call_with_declared(wants_more, **AVAILABLE)


def test_bound_methods_and_classes() -> None:
    class Handler:
        def __init__(self, config: Any) -> None:
            self.config = config

        def handle_batch(self, payload: Any) -> Any:
            return [self.config["scale"] * item for item in payload]

    handler = call_with_declared(Handler, config={"scale": 10}, job_spec={"job_id": "j"})
    assert isinstance(handler, Handler) and handler.config == {"scale": 10}
    assert call_with_declared(handler.handle_batch, **AVAILABLE) == [10, 20]

    class Everything:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

    made = call_with_declared(Everything, config={}, job_spec={"job_id": "j"})
    assert made.kwargs == {"config": {}, "job_spec": {"job_id": "j"}}


def test_describe_exception() -> None:
    try:
        raise KeyError("missing")
    except KeyError as exc:
        described = describe_exception(exc)
    assert described["error"] == "KeyError: 'missing'"
    assert described["traceback"].startswith("Traceback (most recent call last):")
    assert 'raise KeyError("missing")' in described["traceback"]


# --- load_handler_class --------------------------------------------------------------------


@pytest.fixture
def clean_handler_module() -> Iterator[None]:
    """load_handler_class registers the file as the `handler` module: undo that."""
    before = sys.modules.get("handler")
    yield
    if before is None:
        sys.modules.pop("handler", None)
    else:
        sys.modules["handler"] = before


def write(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source))
    return path


@pytest.mark.usefixtures("clean_handler_module")
def test_load_handler_class(tmp_path: Path) -> None:
    path = write(
        tmp_path / "handler.py",
        """
        CONSTANT = 42

        class Handler:
            def handle_batch(self, payload):
                return CONSTANT
        """,
    )
    handler_class = load_handler_class(str(path))
    assert handler_class.__name__ == "Handler"
    assert handler_class().handle_batch([]) == 42
    assert sys.modules["handler"].CONSTANT == 42


@pytest.mark.usefixtures("clean_handler_module")
@pytest.mark.parametrize(
    "source",
    [
        "class Predictor:\n    pass\n",
        "def Handler(config):\n    return None\n",
        "Handler = 3\n",
        "",
    ],
    ids=["other-class", "function", "value", "empty"],
)
def test_file_without_a_handler_class(tmp_path: Path, source: str) -> None:
    path = write(tmp_path / "handler.py", source)
    with pytest.raises(TypeError) as caught:
        load_handler_class(str(path))
    assert str(caught.value) == f"{path} does not define class Handler"


@pytest.mark.usefixtures("clean_handler_module")
def test_handler_file_errors_propagate(tmp_path: Path) -> None:
    with pytest.raises(SyntaxError):
        load_handler_class(str(write(tmp_path / "broken.py", "class Handler(:\n")))
    with pytest.raises(ZeroDivisionError):
        load_handler_class(str(write(tmp_path / "raises.py", "1 / 0\nclass Handler: pass\n")))
    with pytest.raises(FileNotFoundError):
        load_handler_class(str(tmp_path / "absent.py"))
    with pytest.raises(ImportError, match="cannot load"):
        load_handler_class(str(write(tmp_path / "handler.txt", "class Handler: pass\n")))


# --- protocol framing ----------------------------------------------------------------------


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair()
    # A broken channel fails the test instead of hanging it.
    left.settimeout(60)
    right.settimeout(60)
    yield left, right
    left.close()
    right.close()


def test_frame_is_a_big_endian_length_then_the_body() -> None:
    assert frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert frame(b"") == b"\x00\x00\x00\x00"
    encoded = encode({"op": "caf\u00e9"})
    body = '{"op":"caf\u00e9"}'.encode()
    # The header counts UTF-8 bytes, not characters.
    assert encoded == struct.pack(">I", len(body)) + body
    assert frame_length(encoded[:FRAME_HEADER_BYTES]) == len(body) == 14


def test_frame_length_limit() -> None:
    assert frame_length(struct.pack(">I", MAX_FRAME_BYTES)) == MAX_FRAME_BYTES
    over = f"frame of {MAX_FRAME_BYTES + 1} bytes, over the {MAX_FRAME_BYTES}-byte frame limit"
    with pytest.raises(BadFrame, match=over):
        frame_length(struct.pack(">I", MAX_FRAME_BYTES + 1))
    with pytest.raises(BadFrame, match="over the"):
        frame_length(b"\xff\xff\xff\xff")


def test_round_trip_both_ways(pair: tuple[socket.socket, socket.socket]) -> None:
    left, right = BlockingChannel(pair[0]), BlockingChannel(pair[1])
    messages: list[dict[str, Any]] = [
        {
            "op": "init",
            "config": {"nested": [1, 2.5, None, True]},
            "text": "\u00e9\u6f22\U0001f600",
        },
        {"op": "next", "token": 0, "done": [], "failed": []},
        {"op": "exit"},
    ]
    for message in messages:
        left.send(message)
    assert [right.recv() for _ in messages] == messages
    right.send({"op": "ready", "has_on_complete": False})
    assert left.recv() == {"op": "ready", "has_on_complete": False}


def test_large_frame_arrives_whole(pair: tuple[socket.socket, socket.socket]) -> None:
    left, right = BlockingChannel(pair[0]), BlockingChannel(pair[1])
    message: dict[str, Any] = {
        "op": "batches",
        "payload": ["x" * 1000] * 4000,
    }  # ~4 MB, many socket reads
    sender = threading.Thread(target=left.send, args=(message,))
    sender.start()
    try:
        assert right.recv() == message
    finally:
        sender.join(60)


def test_frames_split_into_single_bytes_reassemble(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    data = encode({"op": "next", "done": [[1, 0.5]]}) + encode({"op": "exit"})
    for byte in data:
        pair[0].sendall(bytes([byte]))
    channel = BlockingChannel(pair[1])
    assert channel.recv() == {"op": "next", "done": [[1, 0.5]]}
    assert channel.recv() == {"op": "exit"}


def test_eof_raises_channel_closed(pair: tuple[socket.socket, socket.socket]) -> None:
    BlockingChannel(pair[0]).send({"op": "exit"})
    pair[0].close()
    channel = BlockingChannel(pair[1])
    assert channel.recv() == {"op": "exit"}
    with pytest.raises(ChannelClosed):
        channel.recv()


def test_eof_inside_a_frame_raises_channel_closed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    whole = encode({"op": "batches", "batches": []})
    pair[0].sendall(whole[:-3])
    pair[0].close()
    with pytest.raises(ChannelClosed):
        BlockingChannel(pair[1]).recv()


def test_eof_inside_the_header_raises_channel_closed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    pair[0].sendall(b"\x00\x00")
    pair[0].close()
    with pytest.raises(ChannelClosed):
        BlockingChannel(pair[1]).recv()


def test_oversized_frame_is_refused_before_its_body(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # Only the header is sent: the receiver must refuse it without waiting for the body.
    pair[0].sendall(struct.pack(">I", MAX_FRAME_BYTES + 1))
    with pytest.raises(BadFrame, match="over the"):
        BlockingChannel(pair[1]).recv()


def test_frame_that_is_not_an_object_is_refused(pair: tuple[socket.socket, socket.socket]) -> None:
    pair[0].sendall(frame(b"[1, 2]"))
    with pytest.raises(BadFrame, match="not a JSON object"):
        BlockingChannel(pair[1]).recv()


def test_send_to_a_closed_peer_raises(pair: tuple[socket.socket, socket.socket]) -> None:
    pair[1].close()
    with pytest.raises(OSError):
        BlockingChannel(pair[0]).send({"op": "x" * 1_000_000})


# --- a real worker process -----------------------------------------------------------------

HANDLER = """
import os

class Handler:
    def __init__(self, config, job_spec):
        self.config = config
        self.job_id = job_spec["job_id"]

    def handle_batch(self, payload, batch_id):
        if payload == ["boom"]:
            raise RuntimeError("boom")
        if payload == ["set"]:
            return {1, 2}
        if payload == ["none"]:
            return None
        return {"payload": payload, "batch_id": batch_id, "config": self.config,
                "job_id": self.job_id, "cwd": os.getcwd()}

    def on_job_complete(self, status):
        print("completed with", status["status"], flush=True)
"""


class WorkerProcess:
    """`python -m batchd.worker` with its channel on a socketpair, as the daemon runs it."""

    def __init__(self, cwd: Path, extra_env: dict[str, str] | None = None) -> None:
        parent, child = socket.socketpair()
        parent.settimeout(60)
        env = dict(os.environ, PYTHONPATH=str(REPO), **(extra_env or {}))
        env[ENV_WORKER_FD] = str(child.fileno())
        env.pop("BATCHD_DAEMON_PID", None)
        # The shared word where the worker keeps the batch it is in, as the daemon gives it.
        self.progress = os.memfd_create("progress")
        os.ftruncate(self.progress, 8)
        env["BATCHD_PROGRESS_FD"] = str(self.progress)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "batchd.worker"],
            cwd=cwd,
            env=env,
            pass_fds=(child.fileno(), self.progress),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        child.close()
        self.sock = parent
        self.channel = BlockingChannel(parent)

    def current_seq(self) -> int:
        return int.from_bytes(os.pread(self.progress, 8, 0), "little")

    def init(self, handler_path: str = "handler.py", config: Any = None) -> dict[str, Any]:
        self.channel.send(
            {
                "op": "init",
                "handler_path": handler_path,
                "config": config or {},
                "job_spec": {"job_id": "job7"},
            }
        )
        return self.channel.recv()

    def finish(self) -> tuple[int, str]:
        """Wait for the exit; return the exit code and the messages the worker logged.

        Outside a daemon the worker logs JSON records to stderr; prints become records."""
        try:
            output, _ = self.process.communicate(timeout=60)
        finally:
            self.sock.close()
            os.close(self.progress)
        messages = []
        for line in output.decode(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                messages.append(line)
                continue
            messages.append(record["message"])
            if "exc_info" in record:
                messages.append(record["exc_info"])
        return self.process.returncode, "".join(m + "\n" for m in messages)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
        self.sock.close()
        with contextlib.suppress(OSError):
            os.close(self.progress)


@pytest.fixture
def worker_in(tmp_path: Path) -> Iterator[Any]:
    started: list[WorkerProcess] = []

    def start(handler_source: str, env: dict[str, str] | None = None) -> WorkerProcess:
        project = tmp_path / f"project{len(started)}"
        project.mkdir()
        (project / "handler.py").write_text(textwrap.dedent(handler_source))
        worker = WorkerProcess(project, env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


def grant(token: int, *batches: tuple[int, list[Any]]) -> dict[str, Any]:
    return {"op": "batches", "token": token, "batches": [list(b) for b in batches]}


FIRST_ASK = {"op": "next", "token": 0, "done": [], "failed": []}


def outcomes(channel: Any, token: int) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    """Every outcome of one grant: the `progress` reports, then its closing `next`. Its
    ask for more halfway (a grant of PREFETCH_MIN_BATCHES or more) gets an empty grant."""
    done: list[list[Any]] = []
    failed: list[dict[str, Any]] = []
    while True:
        message = channel.recv()
        assert message["token"] == token
        done += message["done"]
        failed += message["failed"]
        if message["op"] == "next":
            return done, failed
        assert message["op"] == "progress"
        if message.get("more"):
            channel.send({"op": "batches", "token": 0, "batches": []})


def test_worker_runs_batches_and_the_completion_hook(worker_in: Any, tmp_path: Path) -> None:
    worker = worker_in(HANDLER)
    assert worker.init(config={"k": "v"}) == {"op": "ready", "has_on_complete": True}
    assert worker.channel.recv() == FIRST_ASK
    worker.channel.send(grant(101, (1, [1, "two"]), (2, ["boom"]), (3, ["set"])))
    (ok,), (boom, unencodable) = outcomes(worker.channel, 101)
    assert ok[0] == 1 and ok[1] >= 0
    assert [(f["seq"], f["duration"] >= 0) for f in (boom, unencodable)] == [(2, True), (3, True)]
    assert ok[2] == {
        "payload": [1, "two"],
        "batch_id": "job7-1",
        "config": {"k": "v"},
        "job_id": "job7",
        "cwd": str(tmp_path / "project0"),
    }
    assert boom["error"] == "RuntimeError: boom"
    assert 'raise RuntimeError("boom")' in boom["traceback"]
    # A result JSON cannot carry fails its batch, not the channel.
    assert unencodable["error"] == "TypeError: Object of type set is not JSON serializable"

    worker.channel.send(grant(102, (4, ["none"])))
    (none,), failed = outcomes(worker.channel, 102)
    assert none[0] == 4 and len(none) == 2 and not failed

    worker.channel.send({"op": "complete", "status": {"status": "completed_with_failures"}})
    assert worker.channel.recv() == {"op": "completed", "ok": True}
    worker.channel.send({"op": "exit"})
    returncode, output = worker.finish()
    assert returncode == 0
    assert "completed with completed_with_failures\n" in output.splitlines(keepends=True)


def test_failing_completion_hook_is_reported(worker_in: Any) -> None:
    worker = worker_in(
        """
        class Handler:
            def __init__(self):
                pass

            def handle_batch(self):
                return "ignored payload"

            def on_job_complete(self):
                raise ValueError("hook broke")
        """
    )
    assert worker.init() == {"op": "ready", "has_on_complete": True}
    worker.channel.recv()
    worker.channel.send(grant(5, (1, [1])))
    assert outcomes(worker.channel, 5)[0][0][2] == "ignored payload"
    worker.channel.send({"op": "complete", "status": {"status": "succeeded"}})
    completed = worker.channel.recv()
    assert (completed["op"], completed["ok"], completed["error"]) == (
        "completed",
        False,
        "ValueError: hook broke",
    )
    worker.channel.send({"op": "exit"})
    assert worker.finish()[0] == 0


def test_a_failed_batch_traceback_starts_at_the_handler(worker_in: Any) -> None:
    """The stored traceback and the logged one begin at handle_batch's frame, go on into
    the function it called, and carry no frame of batchd's worker."""
    worker = worker_in(
        """
        import json


        def parse(text):
            return json.loads(text)


        class Handler:
            def handle_batch(self, payload):
                return parse(payload[0])
        """
    )
    assert worker.init()["op"] == "ready"
    worker.channel.recv()
    worker.channel.send(grant(9, (1, ["{not json"])))
    (failed,) = outcomes(worker.channel, 9)[1]
    assert failed["error"].startswith("JSONDecodeError: Expecting property name")
    lines = failed["traceback"].splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[1].startswith('  File "') and 'handler.py", line' in lines[1]
    assert lines[1].endswith(", in handle_batch")
    assert any(line.endswith(", in parse") for line in lines)
    # The library the handler called keeps its frames; only the worker's go.
    assert any("json" in line and "decoder.py" in line for line in lines)
    worker_dir = str(REPO / "batchd" / "worker")
    assert worker_dir not in failed["traceback"] and "batchd/worker" not in failed["traceback"]
    worker.channel.send({"op": "exit"})
    returncode, logged = worker.finish()
    assert returncode == 0
    logged_trace = logged.split("handle_batch failed\n", 1)[1]
    assert logged_trace.startswith("Traceback (most recent call last):\n")
    assert "batchd/worker" not in logged_trace and ", in handle_batch" in logged_trace


def test_an_init_traceback_starts_at_the_handler(worker_in: Any) -> None:
    worker = worker_in(
        """
        def load(config):
            raise OSError("no model at " + config["model"])


        class Handler:
            def __init__(self, config):
                self.model = load(config)
        """
    )
    message = worker.init(config={"model": "/nowhere"})
    assert (message["op"], message["error"]) == ("init_failed", "OSError: no model at /nowhere")
    lines = message["traceback"].splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert 'handler.py", line' in lines[1] and lines[1].endswith(", in __init__")
    assert any(line.endswith(", in load") for line in lines)
    assert "batchd/worker" not in message["traceback"]
    assert worker.finish()[0] == WORKER_EXIT_INIT_FAILED


def test_trimming_keeps_a_handler_whose_path_only_begins_like_the_workers() -> None:
    """Frames are batchd's by folder, not by name prefix: a handler kept in a sibling such
    as `batchd/worker_tools/` keeps its frames; the worker's own are dropped."""
    worker_dir = REPO / "batchd" / "worker"

    def raised_in(filename: str) -> BaseException:
        code = compile("def run():\n    raise ValueError('x')\n", filename, "exec")
        scope: dict[str, Any] = {}
        exec(code, scope)
        try:
            scope["run"]()
        except ValueError as exc:
            return exc
        raise AssertionError("run() did not raise")

    def first_file(exc: BaseException) -> str | None:
        # The traceback's first frame is this test's; trimming starts from the next.
        assert exc.__traceback__ is not None
        trimmed = handler_frames(exc.__traceback__.tb_next)
        return None if trimmed is None else trimmed.tb_frame.f_code.co_filename

    sibling = str(worker_dir) + "_tools/handler.py"
    assert first_file(raised_in(sibling)) == sibling
    assert first_file(raised_in(str(worker_dir / "main.py"))) is None
    model = str(worker_dir / "models" / "onnx.py")
    assert first_file(raised_in(model)) == model


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("class Predictor:\n    pass\n", "does not define class Handler"),
        (
            "class Handler:\n    def __init__(self, config):\n        raise OSError('no model')\n",
            "OSError: no model",
        ),
        ("class Handler:\n    pass\n", "TypeError: Handler has no handle_batch method"),
        ("import not_a_module_anywhere\n", "ModuleNotFoundError"),
    ],
    ids=["no-handler", "init-raises", "no-handle-batch", "import-error"],
)
def test_init_failure_is_reported_and_exits_with_the_boot_error_code(
    worker_in: Any, source: str, error: str
) -> None:
    worker = worker_in(source)
    message = worker.init()
    assert message["op"] == "init_failed"
    assert error in message["error"]
    assert message["traceback"].startswith("Traceback")
    assert worker.finish()[0] == WORKER_EXIT_INIT_FAILED


def test_worker_without_hook_says_so_and_exits_when_the_daemon_goes(worker_in: Any) -> None:
    worker = worker_in(
        """
        class Handler:
            def handle_batch(self, payload):
                return payload
        """
    )
    assert worker.init() == {"op": "ready", "has_on_complete": False}
    assert worker.channel.recv() == FIRST_ASK
    # The daemon closing the channel (EOF) is a clean exit, not a crash.
    worker.sock.shutdown(socket.SHUT_RDWR)
    assert worker.finish()[0] == 0


def test_handler_prints_do_not_corrupt_the_channel(worker_in: Any) -> None:
    worker = worker_in(
        """
        import sys

        class Handler:
            def handle_batch(self, payload):
                # Looks like a frame header: it must land in the log, not the channel.
                print("\\x00\\x00\\x00\\x05noise", flush=True)
                sys.stderr.write("on stderr\\n")
                return {"echo": payload}
        """
    )
    worker.init()
    worker.channel.recv()
    worker.channel.send(grant(1, (1, ["a"])))
    assert outcomes(worker.channel, 1)[0][0][2] == {"echo": ["a"]}
    worker.channel.send({"op": "exit"})
    returncode, output = worker.finish()
    assert returncode == 0
    lines = output.splitlines()
    assert "\x00\x00\x00\x05noise" in lines and "on stderr" in lines


def test_unknown_op_crashes_the_worker(worker_in: Any) -> None:
    worker = worker_in("class Handler:\n    def handle_batch(self):\n        pass\n")
    worker.init()
    worker.channel.recv()
    worker.channel.send({"op": "dance"})
    returncode, output = worker.finish()
    assert returncode == 1
    assert "ValueError: unknown op 'dance'" in output


def test_encode_matches_what_the_worker_reads() -> None:
    # The daemon splices stored payloads into frames as bytes; the worker decodes them
    # with json.loads, so any compact JSON text must survive the trip.
    body = b'{"op":"batches","token":1,"batches":[[1,[1,{"a":"\xc3\xa9"}]]]}'
    left, right = socket.socketpair()
    with left, right:
        left.sendall(frame(body))
        assert BlockingChannel(right).recv() == json.loads(body)


def test_memory_bound_without_cgroups_exits_as_out_of_memory(worker_in: Any) -> None:
    from batchd.constants import ENV_MEMORY_LIMIT, WORKER_EXIT_OUT_OF_MEMORY

    worker = worker_in(
        """
        class Handler:
            def handle_batch(self, payload):
                hog = []
                while True:
                    hog.append(bytearray(32 * 1024 * 1024))
        """,
        env={ENV_MEMORY_LIMIT: str(512 * 1024 * 1024)},
    )
    worker.init()
    worker.channel.recv()
    worker.channel.send(grant(1, (1, ["hog"])))
    returncode, _ = worker.finish()
    assert returncode == WORKER_EXIT_OUT_OF_MEMORY


def test_nan_result_fails_the_batch(worker_in: Any) -> None:
    worker = worker_in(
        "class Handler:\n    def handle_batch(self, payload):\n        return float('nan')\n"
    )
    worker.init()
    worker.channel.recv()
    worker.channel.send(grant(1, (1, ["x"])))
    done, (outcome,) = outcomes(worker.channel, 1)
    assert not done
    assert "JSON" in outcome["error"]
    worker.channel.send({"op": "exit"})
    assert worker.finish()[0] == 0


def test_a_long_grant_asks_for_the_next_halfway_and_reports_all_of_it(worker_in: Any) -> None:
    worker = worker_in(
        """
        class Handler:
            def handle_batch(self, payload, batch_id):
                if payload == ["bad"]:
                    raise ValueError(batch_id)
        """
    )
    worker.init()
    assert worker.channel.recv() == FIRST_ASK
    first = [(seq, ["ok"]) for seq in range(1, 21)]
    first[14] = (15, ["bad"])
    worker.channel.send(grant(7, *first))
    done: list[int] = []
    failed: list[int] = []
    while True:
        message = worker.channel.recv()
        assert message["op"] == "progress" and message["token"] == 7
        done += [o[0] for o in message["done"]]
        failed += [f["seq"] for f in message["failed"]]
        if message.get("more"):
            # Asked halfway (10 of 20), with the outcomes so far.
            assert done + failed == list(range(1, 11))
            break
    # The answer to `more` is the next grant; the rest of the first is reported before it.
    worker.channel.send(grant(8, (21, ["ok"]), (22, ["bad"])))
    by_token: dict[int, tuple[list[int], list[int]]] = {7: (done, failed), 8: ([], [])}
    while True:
        message = worker.channel.recv()
        seen_done, seen_failed = by_token[message["token"]]
        seen_done += [o[0] for o in message["done"]]
        seen_failed += [f["seq"] for f in message["failed"]]
        if message["op"] == "next":
            assert message["token"] == 8
            break
        assert message["op"] == "progress"
        if message.get("more"):
            # Grant 8 holds two: it asks halfway too; nothing more comes.
            assert message["token"] == 8 and seen_done == [21]
            worker.channel.send({"op": "batches", "token": 0, "batches": []})
    assert sorted(done) == [n for n in range(1, 21) if n != 15]
    assert failed == [15]
    assert by_token[8] == ([21], [22])
    assert worker.current_seq() == 22
    worker.channel.send({"op": "exit"})
    assert worker.finish()[0] == 0


def test_an_empty_answer_to_more_ends_the_grant_with_next(worker_in: Any) -> None:
    worker = worker_in("class Handler:\n    def handle_batch(self):\n        pass\n")
    worker.init()
    worker.channel.recv()
    worker.channel.send(grant(3, *[(seq, [seq]) for seq in range(1, 17)]))
    reported: list[int] = []
    while True:
        message = worker.channel.recv()
        reported += [o[0] for o in message["done"]]
        if message.get("more"):
            break
    worker.channel.send({"op": "batches", "token": 0, "batches": []})
    done, failed = outcomes(worker.channel, 3)
    assert sorted(reported + [o[0] for o in done]) == list(range(1, 17)) and not failed
    assert worker.current_seq() == 16
    worker.channel.send({"op": "exit"})
    assert worker.finish()[0] == 0
