"""Deployed APIs: immutable project snapshots, and how their workers are launched."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchd import constants
from batchd.apis.archive import DeployedProject, remove_snapshot, unpack_project
from batchd.apis.handler_check import check_handler_imports
from batchd.apis.model_paths import check_model_paths
from batchd.apis.spec import ApiSpec
from batchd.apis.venvs import Progress, VenvStore, requirements_of
from batchd.config import DaemonConfig
from batchd.errors import DomainError, Invalid, NotFound
from batchd.pool.process import WorkerLaunch, cortex_pythonpath, worker_pythonpath
from batchd.scheduler.allocator import LaunchRefused
from batchd.store import views
from batchd.store.records import ApiRecord, JobRecord
from batchd.store.roles import Store
from batchd.worker.models import ENV_MODELS

# The key in a stored spec that names the snapshot folder under <state>/apis/<name>/.
SNAPSHOT_KEY = "snapshot"
INCOMING = ".incoming"
DIGEST_KEY = "digest"
# The key of the venv (under [deploy] venv_dir) a version's workers run in; absent: none.
VENV_KEY = "venv"
# The config file a version was deployed with when the client named one (`--config`), so
# that a node unpacking its stored archive reads the same file.
CONFIG_KEY = "config_file"


@dataclass(frozen=True)
class Deployment:
    """One API of a deploy: its version, whether that is new, and what the deploy ignored
    (the translation's warnings, requirements left uninstalled)."""

    record: ApiRecord
    new: bool
    warnings: tuple[str, ...]


def snapshot_digest(root: Path, spec: dict[str, Any], dotenv: dict[str, str]) -> str:
    """sha256 of the spec, the .env and every file (path and bytes) of a snapshot."""
    digest = hashlib.sha256(json.dumps([spec, dotenv], sort_keys=True).encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        if path.is_symlink():
            digest.update(b"->" + os.readlink(path).encode())
        else:
            with path.open("rb") as data:
                for chunk in iter(lambda: data.read(1 << 20), b""):
                    digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` wins at every level; nested tables are merged, not replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _into_place(incoming: Path, final: Path) -> None:
    """Move an unpacked (read-only) snapshot to its final folder."""
    final.parent.mkdir(parents=True, exist_ok=True)
    # Moving a folder to another parent rewrites its "..", which needs write permission on
    # the folder itself: open the read-only root for the move, then close it again.
    os.chmod(incoming, 0o755)
    incoming.rename(final)
    os.chmod(final, 0o555)


class ApiRegistry:
    def __init__(self, config: DaemonConfig, store: Store, worker_token: str | None = None) -> None:
        self.config = config
        self.store = store
        self._worker_token = worker_token
        self.root = config.state_path / "apis"
        self._pythonpath = worker_pythonpath(config.state_path / "runtime")
        self._cortex_pythonpath = cortex_pythonpath(config.state_path / "runtime")
        self._cache: dict[tuple[str, int], ApiRecord] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # This node's snapshot folders of an API, written (a first use) or removed one at a
        # time. Not `_serialised`: a worker's start must not wait out a deploy's handler
        # check (nor, were that lock shared by the nodes, another node's deploy).
        self._folder_locks: dict[str, asyncio.Lock] = {}
        # Versions whose stored project was refused here: an archive never changes, so
        # neither does the answer (a job's next worker is refused at once, not unpacked).
        self._refused: dict[tuple[str, int], str] = {}
        self.venvs = VenvStore(config.venv_path, config.deploy, config.state_path)
        # The venvs of deploys under way, by their upload's folder.
        self._deploying: dict[Path, str] = {}
        # Uploads cut off by a crash leave half-written folders here; none is in use.
        if (self.root / INCOMING).exists():
            remove_snapshot(self.root / INCOMING)

    async def deploy(
        self,
        archive: bytes,
        check: bool = True,
        config: str | None = None,
        name: str | None = None,
        progress: Progress | None = None,
    ) -> list[Deployment]:
        """Unpack an uploaded project into a new snapshot and record it as the next version
        of each API its config defines (a cortex.yaml may define several; `name` keeps one),
        in the file's order: a refused API leaves the ones before it deployed.

        Deploying exactly what an API's latest version already holds changes nothing for it
        (so restarts with --deploy add no versions). With `check`, the Handler must import
        (under the API's interpreter and env) first; a project whose Handler does not import
        leaves no version behind (422). A project with requirements gets its venv first
        (pip's lines go to `progress`); a pip that fails is a 422 too.
        """
        incoming = self.root / INCOMING / secrets.token_hex(8)
        incoming.parent.mkdir(parents=True, exist_ok=True)
        project = await asyncio.to_thread(
            unpack_project, archive, incoming, self.config.max_project_size, config, name
        )
        deployments: list[Deployment] = []
        try:
            for index, api in enumerate(project.apis):
                warnings = list(api.warnings)
                try:
                    record, new = await self._record(
                        api.spec,
                        project,
                        incoming,
                        index == len(project.apis) - 1,
                        archive,
                        check,
                        config is not None,
                        progress,
                        warnings,
                    )
                finally:
                    self._deploying.pop(incoming, None)
                deployments.append(Deployment(record, new, tuple(warnings)))
        finally:
            if incoming.exists():
                await asyncio.to_thread(remove_snapshot, incoming)
        return deployments

    def _copy(self, snapshot: Path) -> Path:
        copy = self.root / INCOMING / secrets.token_hex(8)
        shutil.copytree(snapshot, copy, symlinks=True)
        return copy

    async def _record(
        self,
        api_spec: ApiSpec,
        project: DeployedProject,
        incoming: Path,
        last: bool,
        archive: bytes,
        check: bool,
        named_config: bool,
        progress: Progress | None,
        warnings: list[str],
    ) -> tuple[ApiRecord, bool]:
        name = api_spec.name
        handler = api_spec.handler
        requirements = await asyncio.to_thread(requirements_of, incoming, handler)
        if requirements is not None and handler.python is not None:
            warnings.append(
                f"{requirements.file or ', '.join(requirements.packages)} was not installed: "
                "[handler] python is set, and the handler runs under that interpreter as it is"
            )
            requirements = None
        digest = await asyncio.to_thread(
            snapshot_digest, incoming, api_spec.model_dump(), project.dotenv
        )
        # Under the lock, the latest version cannot change between the comparison and the
        # new row: N identical deploys at once make one version.
        async with self._serialised(name):
            latest = await self.store.get_api(name)
            if latest is not None and latest.spec.get(DIGEST_KEY) == digest:
                return latest, False
            venv = None
            if requirements is not None:
                # From before its build until deploy() ends, this daemon's sweeps keep it:
                # no version names it yet.
                self._deploying[incoming] = requirements.key()
                venv = await self.venvs.ensure(requirements, incoming, progress)
            # Whatever `check` says: a model path that holds no model serves nothing.
            await asyncio.to_thread(check_model_paths, handler, incoming, project.config_file)
            if check and handler.path is not None:
                await check_handler_imports(
                    self._python(handler.python, venv),
                    incoming,
                    handler.path,
                    self._api_env(name, api_spec, project.dotenv),
                    self.config.handler_check_timeout,
                )
            snapshot = f"{secrets.token_hex(6)}"
            # Each new version gets a snapshot of its own: the last API of the file takes
            # the unpacked (read-only) folder, the others a copy, made only now that the
            # checks passed and the version is new (an unchanged redeploy copies nothing).
            folder = incoming if last else await asyncio.to_thread(self._copy, incoming)
            # The snapshot is in place before the row that names it: a crash in between
            # leaves an unused folder, never a version without its files.
            _into_place(folder, self.root / name / snapshot)
            spec = api_spec.model_dump()
            spec[SNAPSHOT_KEY] = snapshot
            spec["files"] = len(project.files)
            spec["size"] = project.size
            spec[DIGEST_KEY] = digest
            if venv is not None:
                spec[VENV_KEY] = venv
            if named_config:
                spec[CONFIG_KEY] = project.config_file
            # Before the version (where the store keeps archives): a node that lacks this
            # snapshot unpacks it from there. A crash in between leaves an archive no
            # version names, dropped with the API.
            await self.store.save_api_archive(name, digest, archive)
            record = await self.store.add_api_version(name, spec, project.dotenv)
        self._cache[(record.name, record.version)] = record
        return record, True

    @contextlib.asynccontextmanager
    async def _serialised(self, name: str) -> AsyncIterator[None]:
        """Deploys and deletes of one API, one at a time.

        The one place that serialises them: an asyncio lock is enough for one daemon on one
        database. A store shared by several daemons (PostgreSQL) needs an advisory lock on
        the API's name here instead.
        """
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            yield

    async def require(self, name: str) -> ApiRecord:
        api = await self.store.get_api(name)
        if api is None:
            raise NotFound(f"API {name!r} is not deployed", "api")
        return api

    async def version(self, name: str, version: int) -> ApiRecord:
        record = self._cache.get((name, version))
        if record is None:
            record = await self.store.get_api(name, version)
            if record is None:
                raise LookupError(f"API {name} version {version} is missing")
            self._cache[(name, version)] = record
        return record

    async def delete(self, name: str) -> None:
        async with self._serialised(name):
            versions = await self.store.api_versions(name)
            await self.store.delete_api(name)
            for record in versions:
                self._cache.pop((record.name, record.version), None)
            async with self._folder_locks.setdefault(name, asyncio.Lock()):
                if (self.root / name).exists():
                    await asyncio.to_thread(remove_snapshot, self.root / name)
        await self.sweep_venvs()

    async def sweep_venvs(self) -> list[str]:
        """Remove the venvs no live version uses (here, or on a daemon sharing the
        folder); the keys removed. After a delete, and once at start."""
        in_use = {
            str(record.spec[VENV_KEY])
            for api in await self.store.list_apis()
            for record in await self.store.api_versions(api.name)
            if record.spec.get(VENV_KEY)
        }
        # Read from the sweep's thread, under each key's lock: a list() of a dict of str is
        # taken whole under the GIL.
        return await asyncio.to_thread(
            self.venvs.sweep, in_use, lambda: list(self._deploying.values())
        )

    def _python(self, python: str | None, venv: str | None) -> str:
        """[handler] python, else the venv's, else the daemon's own interpreter."""
        if python is not None:
            return python
        return sys.executable if venv is None else str(self.venvs.python(venv))

    async def _venv_here(self, api: ApiRecord, snapshot: Path, spec: ApiSpec) -> str | None:
        """The version's venv, built on this node when missing (deployed on another node
        sharing the database, or removed by hand); LaunchRefused with pip's error."""
        key = api.spec.get(VENV_KEY)
        if key is None or spec.handler.python is not None or self.venvs.ready(str(key)):
            return None if key is None else str(key)
        try:
            requirements = await asyncio.to_thread(requirements_of, snapshot, spec.handler)
            if requirements is None:
                raise Invalid(f"the project names no requirements for venv {key}")
            return await self.venvs.ensure(requirements, snapshot, key=str(key))
        except DomainError as exc:
            raise LaunchRefused(
                f"the venv of API {api.name} version {api.version} cannot be built on this "
                f"node: {exc.message}"
            ) from None

    def _api_env(self, name: str, spec: ApiSpec, dotenv: dict[str, str]) -> dict[str, str]:
        """The environment an API's Python runs in: the daemon's, its .env, [handler] env.

        PYTHONPATH: batchd, then batchd's cortex modules when the API asks for them, the
        PYTHONPATH it had, and last (as Cortex appended it) its python_path, relative:
        Python resolves it against the folder it starts in, the worker's copy of the
        project (the handler check's: the snapshot)."""
        env = dict(os.environ)
        env.update(dotenv)
        env.update(spec.handler.env)
        handler = spec.handler
        pythonpath = [
            str(self._pythonpath),
            str(self._cortex_pythonpath) if handler.cortex_modules else "",
            env.get("PYTHONPATH", ""),
            handler.python_path or "",
        ]
        env.update(
            {
                constants.ENV_URL: self.config.base_url,
                constants.ENV_API_NAME: name,
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(p for p in pythonpath if p),
            }
        )
        if self._worker_token:
            # Handlers reach the daemon with the client (chained jobs): give them the key.
            env[constants.ENV_TOKEN] = self._worker_token
        return env

    def snapshot_dir(self, api: ApiRecord) -> Path:
        return self.root / api.name / str(api.spec[SNAPSHOT_KEY])

    async def snapshot_here(self, api: ApiRecord) -> Path:
        """The version's snapshot on this node: unpacked from the store's archive on first
        use (deployed on another node sharing the database), and checked against the
        version's digest. LaunchRefused when it cannot be had: never another project."""
        folder = self.snapshot_dir(api)
        if folder.is_dir():
            return folder
        key = (api.name, api.version)
        # Two first uses at once: the second finds the first's folder in place.
        async with self._folder_locks.setdefault(api.name, asyncio.Lock()):
            if key in self._refused:
                raise LaunchRefused(self._refused[key])
            if not folder.is_dir():
                try:
                    await self._unpack_stored(api, folder)
                except LaunchRefused as exc:
                    self._refused[key] = str(exc)
                    raise
        return folder

    async def _unpack_stored(self, api: ApiRecord, folder: Path) -> None:
        which = f"API {api.name} version {api.version}"
        digest = str(api.spec.get(DIGEST_KEY))
        archive = await self.store.api_archive(api.name, digest)
        if archive is None:
            raise LaunchRefused(
                f"the project of {which} is not on this node, and the database holds no "
                "archive of it"
            )
        incoming = self.root / INCOMING / secrets.token_hex(8)
        incoming.parent.mkdir(parents=True, exist_ok=True)
        try:
            try:
                project = await asyncio.to_thread(
                    unpack_project,
                    archive,
                    incoming,
                    self.config.max_project_size,
                    api.spec.get(CONFIG_KEY),
                    api.name,
                )
            except DomainError as exc:
                raise LaunchRefused(
                    f"the stored archive of {which} cannot be unpacked: {exc.message}"
                ) from None
            unpacked = await asyncio.to_thread(
                snapshot_digest, incoming, project.spec.model_dump(), project.dotenv
            )
            if unpacked != digest:
                raise LaunchRefused(
                    f"the stored archive of {which} does not match the digest it was "
                    "deployed with: refusing to run it (deploy the project again)"
                )
            await asyncio.to_thread(_into_place, incoming, folder)
        finally:
            if incoming.exists():
                await asyncio.to_thread(remove_snapshot, incoming)

    async def launch_for(self, job: JobRecord, slot: int) -> WorkerLaunch:
        api = await self.version(job.api_name, job.api_version)
        cwd = await self.snapshot_here(api)
        spec = ApiSpec.model_validate(
            {k: api.spec[k] for k in ("name", "handler", "compute") if k in api.spec}
        )
        venv = await self._venv_here(api, cwd, spec)
        env = self._api_env(job.api_name, spec, api.dotenv)
        env[constants.ENV_JOB_ID] = job.job_id
        env[constants.ENV_WORKER_SLOT] = str(slot)
        if spec.handler.models is not None:
            env[ENV_MODELS] = json.dumps(
                {
                    "type": spec.handler.type,
                    "models": spec.handler.models.model_dump(),
                    "gpus": spec.compute.gpu,
                }
            )
        return WorkerLaunch(
            slot=slot,
            job_id=job.job_id,
            python=self._python(spec.handler.python, venv),
            cwd=cwd,
            env=env,
            labels=self._labels(job, slot),
            gpus=spec.compute.gpu,
            mem=spec.compute.mem_bytes,
            disk=spec.compute.disk_bytes or self.config.max_workspace_size,
        )

    def _labels(self, job: JobRecord, slot: int) -> dict[str, Any]:
        labels: dict[str, Any] = {"apiName": job.api_name, "jobID": job.job_id, "workerSlot": slot}
        if self.store.shared:
            # One job log holds every node's workers, and slots repeat from node to node.
            labels["node"] = self.config.node_name
        return labels

    async def init_for(self, job: JobRecord) -> dict[str, Any]:
        api = await self.version(job.api_name, job.api_version)
        handler = api.spec["handler"]
        spec = views.job_spec(job)
        job_spec = {
            key: spec[key]
            for key in (
                "job_id",
                "api_name",
                "config",
                "workers",
                "total_batch_count",
                "start_time",
                "timeout",
                "max_receive_count",
            )
        }
        return {
            # Empty: a model API's built-in handler.
            "handler_path": handler["path"] or "",
            "config": deep_merge(handler.get("config", {}), job.config),
            "job_spec": job_spec,
        }
