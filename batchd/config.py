"""Daemon configuration: a TOML file, every key optional, unknown keys refused."""

from __future__ import annotations

import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from batchd import constants

# base_url is the URL handlers are given (BATCHD_URL): built the way the client reads it.
from batchd.urls import unix_socket_url

# listen = "unix:/run/batchd/batchd.sock" serves on a Unix socket instead of TCP.
UNIX_PREFIX = "unix:"


class ConfigError(Exception):
    """A config file or flag is wrong; the message names the key."""


def _default_state_dir() -> str:
    # Under systemd, StateDirectory= exports the directory it created for us.
    return os.environ.get("STATE_DIRECTORY", constants.DEFAULT_STATE_DIR).split(":")[0]


def _default_database() -> str | None:
    return os.environ.get(constants.ENV_DATABASE) or None


# What a `database` URL may start with (the schemes libpq and asyncpg take).
DATABASE_SCHEMES = ("postgresql://", "postgres://")
# A URL is a line; a database_file longer than this is not one (and is not read whole).
MAX_DATABASE_FILE_BYTES = 64 * 1024


class DeploySettings(BaseModel):
    """`[deploy]`: how a project's requirements.txt is installed into its API's venv."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # pip --find-links: folders or URLs of wheels (an air-gapped box's wheelhouse).
    find_links: list[Annotated[str, Field(min_length=1)]] = []
    # pip --no-index: install from find_links only, never from a package index.
    no_index: bool = False
    # Where the venvs live; None: <state_dir>/venvs.
    venv_dir: str | None = Field(default=None, min_length=1)
    # Seconds one venv's build (python -m venv and pip install) may take.
    venv_timeout: float = Field(default=1800.0, gt=0, allow_inf_nan=False)


class S3Config(BaseModel):
    """``[s3]``: where ``s3://`` inputs are read (needs ``batchd[s3]``). Credentials come from
    wherever boto3 finds them: the environment, ~/.aws/credentials, a role."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # A server speaking S3's API (MinIO, a local one); None: AWS, or AWS_ENDPOINT_URL.
    endpoint_url: str | None = None
    region: str | None = None

    @field_validator("endpoint_url")
    @classmethod
    def _check_endpoint_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        # Whole, and its host and port parsed here: boto3 raises a plain ValueError on
        # "http://a b" or "http://[::1" only when a job's s3:// path makes the client.
        try:
            # .port raises ValueError on a port that is not a number.
            whole = re.fullmatch(r"https?://[^/?#\s]+(?:[/?#]\S*)?", value) is not None
            valid = whole and urlsplit(value).port != 0
        except ValueError:
            valid = False
        if not valid:
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value


class DaemonConfig(BaseModel):
    # strict: TOML has types, so `max_workers = true` or `lease_timeout = "5"` is a mistake
    # to report, not a value to coerce (an integer still fills a float key).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    listen: str = constants.DEFAULT_LISTEN
    state_dir: str = Field(default_factory=_default_state_dir)
    max_workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    input_roots: list[str] = []
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # auto: lines for a person on a terminal, JSON under systemd or into a pipe or file.
    log_format: Literal["auto", "human", "json"] = "auto"
    max_project_size: int = Field(default=32 * 1024 * 1024, ge=1)
    # Disk each worker's workspace (project copy and TMPDIR) may use; [compute] disk wins.
    max_workspace_size: int = Field(default=10 * 1024**3, ge=1)
    max_request_size: int = Field(default=256 * 1024 * 1024, ge=1024)
    max_item_size: int = Field(default=256 * 1024, ge=1)
    # One batch's payload must fit in a worker's pipe frame.
    max_batch_size: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        le=constants.MAX_FRAME_BYTES - constants.FRAME_ENVELOPE_BYTES,
    )
    max_json_depth: int = Field(default=64, ge=2, le=10_000)
    lease_timeout: float = Field(default=60.0, gt=0)
    batch_timeout: float | None = Field(default=None, gt=0)
    on_job_complete_timeout: float = Field(
        default=constants.DEFAULT_ON_JOB_COMPLETE_TIMEOUT, gt=0, allow_inf_nan=False
    )
    max_result_size: int = Field(
        default=constants.DEFAULT_MAX_RESULT_SIZE, ge=1, le=constants.MAX_RESULT_SIZE_CAP
    )
    max_batches_per_worker: int | None = Field(default=None, ge=1)
    token_file: str | None = None
    read_only_token_file: str | None = None
    request_read_timeout: float = Field(default=60.0, gt=0)
    max_batches_per_job: int = Field(default=10_000_000, ge=1)
    gpus: Literal["auto"] | list[Annotated[int, Field(ge=0)]] = "auto"
    nvidia_smi: str = "nvidia-smi"
    worker_stop_grace: float = Field(default=10.0, ge=0)
    max_worker_restarts: int = Field(default=5, ge=0)
    restart_backoff: float = Field(default=0.5, ge=0)
    max_restart_backoff: float = Field(default=30.0, ge=0)
    socket_mode: str = "0660"
    socket_group: str | None = None
    sqlite_synchronous: Literal["full", "normal"] = "full"
    checkpoint_interval: float = Field(default=300.0, gt=0)
    retention_days: float = Field(default=30.0, gt=0)
    handler_check_timeout: float = Field(default=120.0, gt=0)
    header_timeout: float = Field(default=10.0, gt=0)
    keepalive_timeout: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=4096, ge=1)
    # The queue on a PostgreSQL server instead of the SQLite file in state_dir: a URL, or a
    # file holding one (a systemd credential keeps the password out of this file).
    database: str | None = Field(default_factory=_default_database)
    database_file: str | None = None
    # This daemon's name among those sharing a database.
    node_name: str = Field(default_factory=socket.gethostname, min_length=1, max_length=200)
    # Sharing a database: a node silent this long is lost; its leases and slots are freed.
    node_timeout: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    deploy: DeploySettings = Field(default_factory=DeploySettings)
    s3: S3Config = S3Config()

    @field_validator("node_name")
    @classmethod
    def _check_node_name(cls, value: str) -> str:
        # It names the node's rows, sessions and log records: PostgreSQL text holds no NUL,
        # and a control character would garble a log line or pg_stat_activity.
        if not value.isprintable():
            raise ValueError(f"node_name must be printable characters, got {value!r}")
        return value

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        if value.startswith(UNIX_PREFIX):
            if not value[len(UNIX_PREFIX) :].startswith("/"):
                raise ValueError(f"a Unix socket must be an absolute path: {value!r}")
            return value
        parse_listen(value)
        return value

    @field_validator("socket_mode")
    @classmethod
    def _check_socket_mode(cls, value: str) -> str:
        if not re.fullmatch(r"0?[0-7]{3}", value):
            raise ValueError(f"socket_mode must be octal like 0660, got {value!r}")
        return value

    @field_validator("database")
    @classmethod
    def _check_database(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(DATABASE_SCHEMES):
            # The URL may hold a password: the message does not repeat it.
            raise ValueError("must be a postgresql:// URL")
        return value

    def database_url(self) -> str | None:
        """The PostgreSQL URL the queue lives at (read from database_file if set), or None
        for the SQLite file in state_dir. Checked at start, not load: the file may exist
        only for the service (a systemd credential)."""
        if self.database_file is None:
            return self.database
        if self.database is not None:
            raise ConfigError("database_file: set database or database_file, not both")
        try:
            with open(self.database_file, "rb") as source:
                raw = source.read(MAX_DATABASE_FILE_BYTES + 1)
        except OSError as exc:
            message = f"database_file: cannot read {self.database_file}: {exc.strerror}"
            raise ConfigError(message) from None
        try:
            url = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            url = ""
        if len(raw) > MAX_DATABASE_FILE_BYTES or not url.startswith(DATABASE_SCHEMES):
            raise ConfigError(f"database_file: {self.database_file} holds no postgresql:// URL")
        return url

    @property
    def unix_socket(self) -> Path | None:
        if self.listen.startswith(UNIX_PREFIX):
            return Path(self.listen[len(UNIX_PREFIX) :])
        return None

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).resolve()

    @property
    def venv_path(self) -> Path:
        """The folder of the APIs' venvs: [deploy] venv_dir, or <state_dir>/venvs."""
        if self.deploy.venv_dir is None:
            return self.state_path / "venvs"
        return Path(self.deploy.venv_dir).resolve()

    @property
    def input_root_paths(self) -> list[Path]:
        return [Path(root) for root in self.input_roots]

    @property
    def base_url(self) -> str:
        if self.unix_socket is not None:
            return unix_socket_url(str(self.unix_socket))
        host = self.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "[::1]"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def check_exposure(config: DaemonConfig) -> None:
    """Anyone who can reach the API can run code as batchd: off loopback, demand a token.
    ``serve`` and ``check-config`` both apply it (a token_file that is set is read, and
    checked, before serving)."""
    if config.unix_socket is not None:
        return
    if config.host not in LOOPBACK_HOSTS and config.token_file is None:
        raise ConfigError(
            f"listen: refusing to listen on {config.listen} without authentication; "
            "set token_file (or listen on 127.0.0.1)"
        )


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"listen must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def load_config(path: Path | None, overrides: dict[str, object] | None = None) -> DaemonConfig:
    data: dict[str, object] = {}
    if path is not None:
        try:
            # TOML is UTF-8 whatever the locale says.
            data = tomllib.loads(path.read_bytes().decode("utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: not UTF-8 ({exc.reason})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    data.update(given)
    try:
        return DaemonConfig.model_validate(data)
    except ValidationError as exc:
        message = describe_validation_error(
            exc, source=str(path or "config"), overridden=frozenset(given)
        )
        raise ConfigError(message) from exc


def describe_validation_error(
    exc: ValidationError, source: str, overridden: frozenset[str] = frozenset()
) -> str:
    """One line per wrong key; a key set by an override is blamed on the command line."""
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        where = "command line" if error["loc"] and error["loc"][0] in overridden else source
        lines.append(f"{where}: {key}: {message}")
    return "\n".join(lines)
