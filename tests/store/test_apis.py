"""ApiStore: deployed API versions."""

from __future__ import annotations

from batchd.store.roles import Store


async def test_api_versions(store: Store) -> None:
    one = await store.add_api_version("demo", {"v": 1}, {})
    two = await store.add_api_version("demo", {"v": 2}, {"K": "V"})
    assert (one.version, two.version) == (1, 2)
    latest = await store.get_api("demo")
    assert latest is not None and latest.spec == {"v": 2} and latest.dotenv == {"K": "V"}
    first = await store.get_api("demo", 1)
    assert first is not None and first.spec == {"v": 1}
    assert await store.delete_api("demo")
    assert await store.get_api("demo") is None
    assert (await store.add_api_version("demo", {"v": 3}, {})).version == 3


async def test_list_apis_and_versions(store: Store) -> None:
    await store.add_api_version("b", {"v": 1}, {})
    await store.add_api_version("a", {"v": 1}, {})
    newest = await store.add_api_version("a", {"v": 2}, {})
    assert [(api.name, api.version) for api in await store.list_apis()] == [("a", 2), ("b", 1)]
    assert [api.version for api in await store.api_versions("a")] == [2, 1]
    assert (await store.list_apis())[0] == newest
    assert await store.delete_api("b")
    assert not await store.delete_api("b")
    assert [api.name for api in await store.list_apis()] == ["a"]
    assert await store.api_versions("b") == []
    # A deleted version is still there when asked for by number (its jobs name it).
    deleted = await store.get_api("b", 1)
    assert deleted is not None and deleted.spec == {"v": 1}
    assert await store.get_api("nope") is None
