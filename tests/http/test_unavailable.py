"""The queue's database unavailable (PostgreSQL down) is 503 with a Retry-After in whole
seconds and the one error body, never 500: through a real aiohttp server on loopback."""

from __future__ import annotations

import pytest
from aiohttp import ClientPayloadError, web
from aiohttp.test_utils import TestClient, TestServer

from batchd.http.app import errors_as_json
from batchd.http.errors import retry_after
from batchd.store import DatabaseUnavailable


@pytest.mark.parametrize(("seconds", "header"), [(0.01, "1"), (1.0, "1"), (2.5, "3"), (10.0, "10")])
def test_retry_after_is_whole_seconds_and_at_least_one(seconds: float, header: str) -> None:
    assert retry_after(seconds) == header


@pytest.mark.parametrize(("seconds", "header"), [(None, "1"), (7.2, "8")])
async def test_database_unavailable_is_503_with_retry_after(
    seconds: float | None, header: str
) -> None:
    secret = "cannot connect to postgresql://batchd:***@db.internal:5432/batchd"

    async def handler(request: web.Request) -> web.Response:
        if seconds is None:
            raise DatabaseUnavailable(secret)
        raise DatabaseUnavailable(secret, retry_after=seconds)

    app = web.Application(middlewares=[errors_as_json])
    app.router.add_get("/", handler)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/")
        assert response.status == 503
        assert response.headers["Retry-After"] == header
        assert response.content_type == "application/json"
        # Where the database is stays in the daemon's log.
        assert await response.json() == {
            "error": {"message": "the queue's database is unavailable; retry shortly"}
        }


async def test_a_stream_cut_by_the_outage_ends_short_not_with_a_second_response() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(b'{"batch_id": "j-1", "result": 1}\n')
        raise DatabaseUnavailable("lost the connection")

    app = web.Application(middlewares=[errors_as_json])
    app.router.add_get("/", handler)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/")
        assert response.status == 200
        # The client can tell the stream is incomplete: it has no last chunk.
        with pytest.raises(ClientPayloadError, match="not completed"):
            await response.read()
