"""The queue's database in the config: `database`, `BATCHD_DATABASE`, `database_file`
(a URL kept out of the config file) and `node_name`."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from batchd.config import ConfigError, load_config

URL = "postgresql://batchd:s3cret@db.example.com:5432/batchd"


def write(tmp_path: Path, text: str, name: str = "batchd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_sqlite_unless_a_database_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATCHD_DATABASE", raising=False)
    config = load_config(None)
    assert (config.database, config.database_file, config.database_url()) == (None, None, None)


def test_database_from_the_environment_and_the_file_beats_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BATCHD_DATABASE", URL)
    assert load_config(None).database_url() == URL
    other = "postgres://elsewhere/q"
    assert load_config(write(tmp_path, f'database = "{other}"\n')).database_url() == other
    monkeypatch.setenv("BATCHD_DATABASE", "")
    assert load_config(None).database is None


def test_a_database_that_is_no_postgresql_url_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("BATCHD_DATABASE", raising=False)
    path = write(tmp_path, 'database = "mysql://root:hunter2@db/q"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: database: Value error, must be a postgresql:// URL"
    assert "hunter2" not in str(caught.value)


def test_database_file_holds_the_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BATCHD_DATABASE", raising=False)
    secret = write(tmp_path, URL + "\n", name="database.url")
    config = load_config(write(tmp_path, f'database_file = "{secret}"\n'))
    assert config.database is None and config.database_url() == URL
    # Read when the daemon starts: a rotated credential is picked up by a restart.
    secret.write_text("postgresql://batchd:new@db/batchd", encoding="utf-8")
    assert config.database_url() == "postgresql://batchd:new@db/batchd"


def test_database_file_errors_name_the_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BATCHD_DATABASE", raising=False)
    missing = tmp_path / "absent.url"
    config = load_config(write(tmp_path, f'database_file = "{missing}"\n'))
    with pytest.raises(ConfigError, match=f"^database_file: cannot read {missing}: No such file"):
        config.database_url()
    junk = write(tmp_path, "password=x\n", name="junk.url")
    config = load_config(write(tmp_path, f'database_file = "{junk}"\n'))
    with pytest.raises(ConfigError, match=r"holds no postgresql:// URL$"):
        config.database_url()
    both = write(tmp_path, f'database = "{URL}"\ndatabase_file = "{junk}"\n')
    with pytest.raises(ConfigError, match="set database or database_file, not both"):
        load_config(both).database_url()


def test_node_name_defaults_to_the_host_name(tmp_path: Path) -> None:
    assert load_config(None).node_name == socket.gethostname()
    assert load_config(write(tmp_path, 'node_name = "batch-01"\n')).node_name == "batch-01"
    with pytest.raises(ConfigError, match="node_name"):
        load_config(write(tmp_path, 'node_name = ""\n'))


@pytest.mark.parametrize(
    "toml", ['node_name = "gpu\\u00001"', 'node_name = "gpu\\n1"', f'node_name = "{"n" * 201}"']
)
def test_a_node_name_postgresql_or_a_log_line_cannot_hold_is_refused(
    tmp_path: Path, toml: str
) -> None:
    with pytest.raises(ConfigError, match="node_name"):
        load_config(write(tmp_path, toml + "\n"))
    # Any printable name is fine, however odd.
    assert load_config(write(tmp_path, 'node_name = "gpu-1 (rack 2) é"\n')).node_name == (
        "gpu-1 (rack 2) é"
    )


@pytest.mark.parametrize(
    "content",
    [b"postgresql://u@h/db\xff\xfe", b"postgresql://u@h/db" + b"x" * (64 * 1024)],
    ids=["not UTF-8", "over 64 KiB"],
)
def test_a_database_file_that_holds_no_url_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: bytes
) -> None:
    monkeypatch.delenv("BATCHD_DATABASE", raising=False)
    odd = tmp_path / "odd-url"
    odd.write_bytes(content)
    config = load_config(write(tmp_path, f'database_file = "{odd}"\n'))
    with pytest.raises(ConfigError, match=f"^database_file: {odd} holds no postgresql:// URL"):
        config.database_url()
