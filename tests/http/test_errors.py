"""The one mapping of domain errors to HTTP: each kind's status code, and the body the error
middleware answers it with, through a real aiohttp server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from batchd import errors
from batchd.errors import DomainError
from batchd.http.app import errors_as_json
from batchd.http.errors import STATUS_CODES, HttpError, error_body, status_of
from batchd.http.openapi import ERROR_TEXT

KINDS: list[tuple[type[DomainError], int]] = [
    (errors.BadRequest, 400),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.Gone, 410),
    (errors.TooLarge, 413),
    (errors.Invalid, 422),
]


@pytest.fixture
async def raising() -> AsyncIterator[
    tuple[TestClient[web.Request, web.Application], list[Exception]]
]:
    """A server whose one route raises whatever the test puts in the list."""
    to_raise: list[Exception] = []

    async def handler(request: web.Request) -> web.Response:
        raise to_raise.pop()

    app = web.Application(middlewares=[errors_as_json])
    app.router.add_get("/", handler)
    async with TestClient(TestServer(app)) as client:
        yield client, to_raise


@pytest.mark.parametrize(("kind", "status"), KINDS, ids=[k.__name__ for k, _ in KINDS])
@pytest.mark.parametrize("field", ["item_list.batch_size", None])
async def test_each_kind_is_answered_with_its_status_and_the_error_body(
    raising: tuple[TestClient[web.Request, web.Application], list[Exception]],
    kind: type[DomainError],
    status: int,
    field: str | None,
) -> None:
    client, to_raise = raising
    error = kind("what went wrong", field)
    assert (error.message, error.field) == ("what went wrong", field)
    assert status_of(error) == status
    to_raise.append(error)
    response = await client.get("/")
    assert response.status == status
    assert response.content_type == "application/json"
    expected: dict[str, object] = {"message": "what went wrong"}
    if field is not None:
        expected["field"] = field
    assert await response.json() == {"error": expected}


def test_every_kind_is_mapped_once_and_documented() -> None:
    kinds = {kind for kind, _ in KINDS}
    assert set(STATUS_CODES) == kinds
    assert set(DomainError.__subclasses__()) == kinds
    assert len(set(STATUS_CODES.values())) == len(kinds)
    # Every status the mapping gives is described in GET /openapi.json.
    assert set(STATUS_CODES.values()) <= set(ERROR_TEXT)


def test_a_subclass_takes_its_kind_and_a_bare_domain_error_is_a_500() -> None:
    class Pruned(errors.Gone):
        pass

    assert status_of(Pruned("pruned")) == 410
    assert status_of(DomainError("no kind")) == 500


async def test_http_errors_carry_their_own_status(
    raising: tuple[TestClient[web.Request, web.Application], list[Exception]],
) -> None:
    client, to_raise = raising
    to_raise.append(HttpError(415, "unsupported content type", "Content-Encoding"))
    response = await client.get("/")
    assert response.status == 415
    assert await response.json() == error_body("unsupported content type", "Content-Encoding")
    assert error_body("m") == {"error": {"message": "m"}}
