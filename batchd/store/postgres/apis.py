"""Deployed API versions (the ``ApiStore`` role)."""

from __future__ import annotations

import json
import time
from typing import Any

from batchd.store.postgres.core import PostgresCore
from batchd.store.postgres.queries import pick
from batchd.store.records import ApiRecord
from batchd.store.rows import api_record

_LATEST_VERSION, _INSERT, _LIVE, _VERSION, _LIVE_APIS, _VERSIONS, _DELETE = pick(
    "latest_api_version",
    "insert_api",
    "live_api",
    "api_version",
    "live_apis",
    "api_versions",
    "delete_api",
)


class PostgresApis(PostgresCore):
    async def add_api_version(
        self, name: str, spec: dict[str, Any], dotenv: dict[str, str]
    ) -> ApiRecord:
        now = time.time()
        async with self._transaction() as db:
            latest = await db.fetchval(_LATEST_VERSION, name)
            version = (latest or 0) + 1
            await db.execute(_INSERT, name, version, json.dumps(spec), json.dumps(dotenv), now)
        return ApiRecord(name=name, version=version, spec=spec, dotenv=dotenv, created_at=now)

    async def get_api(self, name: str, version: int | None = None) -> ApiRecord | None:
        if version is None:
            row = await self._r.fetchrow(_LIVE, name)
        else:
            row = await self._r.fetchrow(_VERSION, name, version)
        return None if row is None else api_record(row)

    async def list_apis(self) -> list[ApiRecord]:
        return [api_record(row) for row in await self._r.fetch(_LIVE_APIS)]

    async def api_versions(self, name: str) -> list[ApiRecord]:
        return [api_record(row) for row in await self._r.fetch(_VERSIONS, name)]

    async def delete_api(self, name: str) -> bool:
        async with self._transaction() as db:
            return await self._exec(db, _DELETE, time.time(), name) > 0
