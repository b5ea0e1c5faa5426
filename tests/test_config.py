"""The daemon config: defaults, the shipped file, errors that name the key, overrides."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from batchd import constants
from batchd.config import ConfigError, DaemonConfig, load_config
from testkit.launcher import free_port
from tests.conftest import REPO

SHIPPED = REPO / "config" / "batchd.toml"


def write(tmp_path: Path, text: str, name: str = "batchd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path | None, overrides: dict[str, object] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    return str(caught.value)


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    config = load_config(None)
    assert config.listen == "127.0.0.1:8780"
    assert (config.host, config.port) == ("127.0.0.1", 8780)
    assert config.base_url == "http://127.0.0.1:8780"
    assert config.state_dir == ".batchd"
    assert config.state_path == (Path.cwd() / ".batchd").resolve()
    assert config.max_workers == (os.cpu_count() or 1)
    assert config.input_roots == [] and config.input_root_paths == []
    assert config.log_level == "info"
    assert config.max_project_size == 32 * 1024 * 1024
    assert config.max_request_size == 256 * 1024 * 1024
    assert config.max_item_size == 256 * 1024
    assert config.lease_timeout == 60.0
    assert config.worker_stop_grace == 10.0
    assert config.max_worker_restarts == 5
    assert config.restart_backoff == 0.5
    assert config.max_restart_backoff == 30.0
    assert config.sqlite_synchronous == "full"
    assert config.retention_days == 30.0


def test_empty_file_gives_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert load_config(write(tmp_path, "")) == load_config(None)


def test_shipped_file_sets_every_key_to_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    from_file = load_config(SHIPPED)
    defaults = load_config(None)
    written = tomllib.loads(SHIPPED.read_text(encoding="utf-8"))
    # The file is documentation of the defaults: it sets many keys, each to the default.
    assert len(written) >= 10
    for key, value in written.items():
        assert key in DaemonConfig.model_fields, key
        assert getattr(from_file, key) == value, key
        assert getattr(defaults, key) == value, f"{key}: the file says {value!r}"
    assert from_file == defaults


def test_keys_commented_out_in_the_shipped_file_parse_too(tmp_path: Path) -> None:
    # `# key = value` lines show optional keys with an example value: each must be valid.
    text = SHIPPED.read_text(encoding="utf-8")
    commented = re.findall(r"^# ([a-z0-9_]+ = .+)$", text, flags=re.MULTILINE)
    assert {line.split(" = ")[0] for line in commented} == {
        "state_dir",
        "max_workers",
        "batch_timeout",
        "max_batches_per_worker",
        "token_file",
        "read_only_token_file",
        "socket_group",
        "database",
        "database_file",
        "node_name",
        "node_timeout",
        "deploy",
        "s3",
    }
    config = load_config(write(tmp_path, text + "\n" + "\n".join(commented) + "\n"))
    assert config.deploy.no_index is True
    assert config.state_dir == "/var/lib/batchd"
    assert config.max_workers == 8
    assert config.batch_timeout == 3600.0


def test_shipped_file_documents_every_key() -> None:
    # Every config key appears in config/batchd.toml, set or commented out.
    text = SHIPPED.read_text(encoding="utf-8")
    commented = set(re.findall(r"^# ([a-z0-9_]+) = ", text, flags=re.MULTILINE))
    missing = set(DaemonConfig.model_fields) - set(tomllib.loads(text)) - commented
    assert not missing, f"config/batchd.toml does not document {sorted(missing)}"


def test_every_key_set_to_something_else(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        listen = "0.0.0.0:9000"
        state_dir = "/srv/batchd"
        max_workers = 3
        input_roots = ["/data", "/mnt/in"]
        log_level = "debug"
        log_format = "human"
        max_project_size = 1000
        max_workspace_size = 5000
        max_request_size = 2048
        max_item_size = 10
        lease_timeout = 7
        worker_stop_grace = 0
        max_worker_restarts = 0
        restart_backoff = 0.25
        max_restart_backoff = 4.5
        sqlite_synchronous = "normal"
        retention_days = 7
        batch_timeout = 90
        max_batches_per_worker = 10
        gpus = [0, 2]
        nvidia_smi = "/opt/nvidia/bin/nvidia-smi"
        token_file = "/etc/batchd/token"
        read_only_token_file = "/etc/batchd/read-token"
        request_read_timeout = 5
        max_batches_per_job = 100
        checkpoint_interval = 30
        socket_mode = "0600"
        socket_group = "staff"
        max_json_depth = 10
        max_result_size = 4096
        on_job_complete_timeout = 30
        max_batch_size = 4096
        handler_check_timeout = 9
        header_timeout = 2
        keepalive_timeout = 3
        max_connections = 50
        database = "postgresql://db.example.com/batchd"
        database_file = "/etc/batchd/database.url"
        node_name = "batch-01"
        node_timeout = 12.5
        [deploy]
        find_links = ["/srv/wheelhouse", "https://wheels.example.com/"]
        no_index = true
        venv_dir = "/srv/venvs"
        venv_timeout = 60
        [s3]
        endpoint_url = "http://127.0.0.1:9000"
        region = "eu-west-1"
        """.replace("\n        ", "\n"),
    )
    config = load_config(path)
    assert config.model_dump() == {
        "listen": "0.0.0.0:9000",
        "state_dir": "/srv/batchd",
        "max_workers": 3,
        "input_roots": ["/data", "/mnt/in"],
        "log_level": "debug",
        "log_format": "human",
        "max_project_size": 1000,
        "max_workspace_size": 5000,
        "max_request_size": 2048,
        "max_item_size": 10,
        "lease_timeout": 7.0,
        "worker_stop_grace": 0.0,
        "max_worker_restarts": 0,
        "restart_backoff": 0.25,
        "max_restart_backoff": 4.5,
        "sqlite_synchronous": "normal",
        "retention_days": 7.0,
        "batch_timeout": 90.0,
        "max_batches_per_worker": 10,
        "gpus": [0, 2],
        "nvidia_smi": "/opt/nvidia/bin/nvidia-smi",
        "token_file": "/etc/batchd/token",
        "read_only_token_file": "/etc/batchd/read-token",
        "request_read_timeout": 5.0,
        "max_batches_per_job": 100,
        "checkpoint_interval": 30.0,
        "socket_mode": "0600",
        "socket_group": "staff",
        "max_json_depth": 10,
        "max_result_size": 4096,
        "on_job_complete_timeout": 30.0,
        "max_batch_size": 4096,
        "handler_check_timeout": 9.0,
        "header_timeout": 2.0,
        "keepalive_timeout": 3.0,
        "max_connections": 50,
        "database": "postgresql://db.example.com/batchd",
        "database_file": "/etc/batchd/database.url",
        "node_name": "batch-01",
        "node_timeout": 12.5,
        "deploy": {
            "find_links": ["/srv/wheelhouse", "https://wheels.example.com/"],
            "no_index": True,
            "venv_dir": "/srv/venvs",
            "venv_timeout": 60.0,
        },
        "s3": {"endpoint_url": "http://127.0.0.1:9000", "region": "eu-west-1"},
    }
    assert isinstance(config.lease_timeout, float)
    assert config.input_root_paths == [Path("/data"), Path("/mnt/in")]
    # A wildcard listen address is reached on loopback.
    assert config.base_url == "http://127.0.0.1:9000"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, 'listen = "127.0.0.1:1234"\nmax_wokers = 4\n')
    assert error_of(path) == f"{path}: max_wokers: unknown key"


def test_s3_table_keys_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, '[s3]\nendpoint = "http://x"\n')
    assert error_of(path) == f"{path}: s3.endpoint: unknown key"
    # Each of these made every s3:// job a 500 (boto3's ValueError) or a 422 blaming the path.
    for bad in ["127.0.0.1:9000", "http://a b", "http://[::1", "http://x:port", "http://x:0"]:
        path = write(tmp_path, f'[s3]\nendpoint_url = "{bad}"\n')
        said = error_of(path)
        assert "s3.endpoint_url: Value error, must be an http:// or https:// URL" in said, bad
    for good in ["http://[::1]:9000", "https://s3.example.com/base", "http://minio:9000"]:
        path = write(tmp_path, f'[s3]\nendpoint_url = "{good}"\n')
        assert load_config(path).s3.endpoint_url == good


def test_unknown_table_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 1\n")
    assert error_of(path) == f"{path}: server: unknown key"


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('max_workers = "four"', "max_workers"),
        ('max_workers = "4"', "max_workers"),
        ("max_workers = true", "max_workers"),
        ("max_workers = 1.5", "max_workers"),
        ('lease_timeout = "5"', "lease_timeout"),
        ('input_roots = "/data"', "input_roots"),
        ("input_roots = [1]", "input_roots.0"),
        ("listen = 8780", "listen"),
        ('log_level = "verbose"', "log_level"),
        ('log_format = "pretty"', "log_format"),
        ('sqlite_synchronous = "off"', "sqlite_synchronous"),
        ("max_workers = 0", "max_workers"),
        ("lease_timeout = 0", "lease_timeout"),
        ("max_request_size = 10", "max_request_size"),
        ("restart_backoff = -1", "restart_backoff"),
        ('deploy = { no_index = "yes" }', "deploy.no_index"),
        ('deploy = { find_links = "/srv/wheels" }', "deploy.find_links"),
        ('deploy = { find_links = [""] }', "deploy.find_links.0"),
        ("deploy = { venv_timeout = 0 }", "deploy.venv_timeout"),
        ('deploy = { venv_dir = "" }', "deploy.venv_dir"),
        ("deploy = { pip = true }", "deploy.pip"),
    ],
)
def test_wrong_value_names_the_key(tmp_path: Path, line: str, key: str) -> None:
    path = write(tmp_path, line + "\n")
    message = error_of(path)
    assert message.startswith(f"{path}: {key}: "), message
    assert "\n" not in message


def test_each_wrong_key_gets_its_own_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'bogus = 1\nmax_workers = "x"\nlog_level = "loud"\n')
    lines = error_of(path).splitlines()
    assert sorted(line.split(": ")[1] for line in lines) == ["bogus", "log_level", "max_workers"]
    assert all(line.startswith(f"{path}: ") for line in lines)


@pytest.mark.parametrize(
    "listen", ["8780", "localhost", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:0", "h:65536"]
)
def test_bad_listen_is_refused(tmp_path: Path, listen: str) -> None:
    path = write(tmp_path, f'listen = "{listen}"\n')
    message = error_of(path)
    assert message.startswith(f"{path}: listen: ")
    assert "HOST:PORT" in message and repr(listen) in message


@pytest.mark.parametrize(
    ("listen", "host", "port", "url"),
    [
        ("127.0.0.1:8000", "127.0.0.1", 8000, "http://127.0.0.1:8000"),
        (":8000", "", 8000, "http://127.0.0.1:8000"),
        ("[::1]:8001", "::1", 8001, "http://[::1]:8001"),
        ("[::]:8002", "::", 8002, "http://[::1]:8002"),
        ("localhost:65535", "localhost", 65535, "http://localhost:65535"),
    ],
)
def test_good_listen_values(listen: str, host: str, port: int, url: str) -> None:
    config = load_config(None, {"listen": listen})
    assert (config.host, config.port, config.base_url) == (host, port, url)


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'listen = "127.0.0.1:1111"\nstate_dir = "/from/file"\nmax_workers = 2\n')
    config = load_config(path, {"listen": "127.0.0.1:2222", "state_dir": "/from/flag"})
    assert config.listen == "127.0.0.1:2222"
    assert config.state_dir == "/from/flag"
    assert config.max_workers == 2
    # A flag that was not given (None) leaves the file's value alone.
    config = load_config(path, {"listen": None, "state_dir": None})
    assert (config.listen, config.state_dir) == ("127.0.0.1:1111", "/from/file")


def test_bad_flag_is_blamed_on_the_command_line_not_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'listen = "127.0.0.1:1111"\n')
    message = error_of(path, {"listen": "nope"})
    assert message.startswith("command line: listen: ") and "'nope'" in message


def test_state_directory_from_systemd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/batchd")
    assert load_config(None).state_dir == "/var/lib/batchd"
    # Several StateDirectory= entries arrive colon-separated: the first is ours.
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/batchd:/var/lib/other")
    assert load_config(None).state_dir == "/var/lib/batchd"
    # The file and the flag both beat the environment.
    path = write(tmp_path, 'state_dir = "/from/file"\n')
    assert load_config(path).state_dir == "/from/file"
    assert load_config(path, {"state_dir": "/from/flag"}).state_dir == "/from/flag"
    monkeypatch.delenv("STATE_DIRECTORY")
    assert load_config(None).state_dir == constants.DEFAULT_STATE_DIR


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    assert error_of(path) == f"cannot read config {path}: No such file or directory"


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "listen = \n")
    assert error_of(path).startswith(f"{path}: invalid TOML: ")


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'listen = "\xff"\n')
    assert error_of(path).startswith(f"{path}: invalid TOML: not UTF-8")


def test_utf8_file_reads_whatever_the_locale(tmp_path: Path) -> None:
    path = tmp_path / "utf8.toml"
    path.write_bytes('state_dir = "/srv/b\u00e4tchd"\n'.encode())
    assert load_config(path).state_dir == "/srv/b\u00e4tchd"


def run_serve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchd", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )


def test_serve_with_a_bad_config_exits_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, 'max_workers = 2\nmax_wokers = 4\nlog_level = "loud"\n', "bad.toml")
    done = run_serve("--config", str(path), "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert done.returncode != 0
    assert f"{path}: max_wokers: unknown key" in done.stderr
    assert f"{path}: log_level: " in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    # Failing fast means nothing was created.
    assert not (tmp_path / "state").exists()


def test_serve_with_a_bad_listen_flag_exits(tmp_path: Path) -> None:
    done = run_serve("--listen", "nowhere", "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert done.returncode != 0
    assert "command line: listen: " in done.stderr and "HOST:PORT" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_with_an_unreadable_config_exits(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"log_level = '\xe9'\n")
    done = run_serve("--config", str(path), cwd=tmp_path)
    assert done.returncode != 0
    assert f"{path}: invalid TOML: not UTF-8" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_on_a_port_in_use_exits_with_a_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_serve(
            "--listen", f"127.0.0.1:{port}", "--state-dir", str(tmp_path / "state"), cwd=tmp_path
        )
    assert done.returncode == 1
    assert "error: " in done.stderr and "address already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_with_an_unusable_state_dir_exits_with_a_message(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    state = tmp_path / "file" / "state"
    done = run_serve(
        "--listen", f"127.0.0.1:{free_port()}", "--state-dir", str(state), cwd=tmp_path
    )
    assert done.returncode == 1
    assert "error: " in done.stderr and str(state) in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("line", "message"),
    [
        # A worker's report of one such result must still fit in a channel frame.
        ("max_result_size = 268435457", "max_result_size: Input should be less than or equal"),
        ("max_result_size = 0", "max_result_size: Input should be greater than or equal to 1"),
        ("on_job_complete_timeout = 0", "on_job_complete_timeout: Input should be greater"),
        ("on_job_complete_timeout = inf", "on_job_complete_timeout: Input should be a finite"),
    ],
)
def test_worker_limits_out_of_range_are_refused(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, line + "\n"))


def check_config(path: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "STATE_DIRECTORY"}
    return subprocess.run(
        [sys.executable, "-m", "batchd", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**environ, "PYTHONPATH": str(REPO), **env},
    )


def test_check_config_refuses_what_serve_refuses_with_its_exit_code(tmp_path: Path) -> None:
    exposed = write(tmp_path, f'listen = "0.0.0.0:{free_port()}"\n')
    checked = check_config(exposed, tmp_path)
    served = run_serve("--config", str(exposed), "--state-dir", str(tmp_path / "s"), cwd=tmp_path)
    assert checked.returncode == served.returncode == 2, (checked.stderr, served.stderr)
    refusal = "listen: refusing to listen on 0.0.0.0"
    assert refusal in checked.stderr and refusal in served.stderr
    # One line naming the file, as check-config's other problems do.
    assert checked.stderr.startswith(f"{exposed}: {refusal}"), checked.stderr
    assert checked.stdout == ""
    # A wrong key: the same code too.
    wrong = write(tmp_path, "max_wokers = 4\n", "wrong.toml")
    assert check_config(wrong, tmp_path).returncode == 2


def test_check_config_reads_the_token_file_as_serve_does(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc\n")
    path = write(tmp_path, f'listen = "0.0.0.0:{free_port()}"\ntoken_file = "{token}"\n')
    short = check_config(path, tmp_path)
    assert short.returncode == 2 and "shorter than 16 characters" in short.stderr
    token.write_text("0123456789abcdef0123\n")
    good = check_config(path, tmp_path)
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith(f"{path}: ok (listen 0.0.0.0:")


def test_check_config_does_not_read_a_systemd_credential_it_cannot_see(tmp_path: Path) -> None:
    credential = "/run/credentials/batchd.service/token"
    assert not os.path.exists(credential)
    path = write(tmp_path, f'listen = "0.0.0.0:{free_port()}"\ntoken_file = "{credential}"\n')
    done = check_config(path, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"token_file: {credential} is a systemd credential" in done.stdout


def state_dir_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("state dir: ")]
    return line


def test_check_config_shows_the_state_dir_serve_would_use(tmp_path: Path) -> None:
    empty = write(tmp_path, "")
    default = state_dir_line(check_config(empty, tmp_path))
    assert default.startswith(f"state dir: {tmp_path / '.batchd'} (the default")
    assert "StateDirectory=batchd makes it /var/lib/batchd" in default
    # Under the unit, systemd sets STATE_DIRECTORY: serve and check-config use it.
    unit = state_dir_line(check_config(empty, tmp_path, STATE_DIRECTORY=str(tmp_path / "lib")))
    assert (
        unit == f"state dir: {tmp_path / 'lib'} ($STATE_DIRECTORY, from systemd's StateDirectory=)"
    )
    # The file's own state_dir wins over both.
    own = write(tmp_path, 'state_dir = "relative/state"\n', "own.toml")
    line = state_dir_line(check_config(own, tmp_path, STATE_DIRECTORY=str(tmp_path / "lib")))
    assert line == f"state dir: {tmp_path / 'relative' / 'state'} (state_dir in the file)"
