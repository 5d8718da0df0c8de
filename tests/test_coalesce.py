"""Concurrent document reads and writes of one database share CouchDB requests
(``kazoo_vm/storage/coalesce.py``): each caller still gets exactly the answer a request
of its own would have had, and never older data.

The storage-level tests put a loopback proxy with latency between the service and the
store, so that one request is surely out while the others arrive and wait.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import Api
from tcp_proxy import TcpProxy, first_node, through

from kazoo_vm.services import Services
from kazoo_vm.storage.couch import Couch
from kazoo_vm.storage.errors import Conflict, NotFound, StoreFault, Unavailable

DELAY = 0.25  # the proxy's latency, each way


@pytest.fixture
async def proxy(couch_url: str) -> AsyncIterator[TcpProxy]:
    """A proxy to the test store that holds every chunk ``DELAY`` seconds."""
    parts = urlsplit(first_node(couch_url))
    slow = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5984, delay=DELAY)
    await slow.start()
    try:
        yield slow
    finally:
        await slow.stop()


@pytest.fixture
async def slow_couch(couch_url: str, proxy: TcpProxy) -> AsyncIterator[Couch]:
    """The test store through ``proxy``."""
    couch = Couch(through(couch_url, proxy.port), connect_timeout=2.0)
    try:
        yield couch
    finally:
        await couch.close()


@pytest.fixture
async def db(services: Services) -> AsyncIterator[str]:
    name = f"kazoo_vm_coalesce_{uuid.uuid4().hex}"
    couch = services.store.couch
    await couch.create_db(name)
    try:
        yield name
    finally:
        await couch.delete_db(name)


async def test_a_read_waiting_behind_another_sees_writes_made_before_it_was_asked(
        slow_couch: Couch, services: Services, db: str) -> None:
    direct = services.store.couch
    doc = {"_id": "box", "name": "before"}
    await direct.put_doc(db, doc)
    first = asyncio.create_task(slow_couch.get_doc(db, "box"))
    await asyncio.sleep(DELAY * 1.5)  # the first read has reached the store, its answer is on the way back
    await direct.put_doc(db, {**doc, "name": "after"})
    second = await slow_couch.get_doc(db, "box")
    assert (await first)["name"] == "before"
    assert second["name"] == "after"


async def test_concurrent_reads_of_one_database_each_get_their_own_document(
        slow_couch: Couch, services: Services, db: str) -> None:
    direct = services.store.couch
    for n in range(5):
        await direct.put_doc(db, {"_id": f"doc{n}", "n": n})
    await direct.delete_doc(db, "doc4", (await direct.get_doc(db, "doc4"))["_rev"])
    wanted = ["doc0", "doc1", "doc2", "doc3", "doc1", "missing", "doc4"]
    answers = await asyncio.gather(*(slow_couch.get_doc(db, doc_id) for doc_id in wanted),
                                   return_exceptions=True)
    assert [a["n"] if isinstance(a, dict) else type(a) for a in answers] == [0, 1, 2, 3, 1, NotFound, NotFound]


async def test_callers_reading_the_same_document_together_get_separate_copies(
        slow_couch: Couch, services: Services, db: str) -> None:
    await services.store.couch.put_doc(db, {"_id": "doc", "tags": ["a"]})
    await services.store.couch.put_doc(db, {"_id": "other"})
    first, *together = await asyncio.gather(slow_couch.get_doc(db, "other"),
                                            *(slow_couch.get_doc(db, "doc") for _ in range(3)))
    together[0]["tags"].append("changed by one caller")
    assert [copy["tags"] for copy in together[1:]] == [["a"], ["a"]]


async def test_concurrent_writes_to_one_database_succeed_or_conflict_each_on_its_own(
        slow_couch: Couch, services: Services, db: str) -> None:
    direct = services.store.couch
    await direct.put_doc(db, {"_id": "taken", "v": 1})
    docs: list[dict[str, Any]] = [{"_id": f"new{n}", "v": n} for n in range(6)]
    docs.insert(3, {"_id": "taken", "v": 2})  # no revision: loses to the stored one
    answers = await asyncio.gather(*(slow_couch.put_doc(db, doc) for doc in docs), return_exceptions=True)
    assert [type(a) if isinstance(a, Exception) else "written" for a in answers] == (
        ["written"] * 3 + [Conflict] + ["written"] * 3)
    for doc, answer in zip(docs, answers, strict=True):
        if not isinstance(answer, Exception):
            assert doc["_rev"] == answer == (await direct.get_doc(db, doc["_id"]))["_rev"]
    assert (await direct.get_doc(db, "taken"))["v"] == 1


async def test_concurrent_updates_sent_together_each_get_their_own_new_revision(
        slow_couch: Couch, services: Services, db: str) -> None:
    # pouchdb-server answers a _bulk_docs of updates in the order it finished them
    direct = services.store.couch
    docs: list[dict[str, Any]] = [{"_id": f"doc{n}", "v": 0} for n in range(21)]
    for doc in docs:
        await direct.put_doc(db, doc)
    for _round in range(6):
        updated = [{**doc, "v": doc["v"] + 1} for doc in docs]
        await asyncio.gather(*(slow_couch.put_doc(db, doc) for doc in updated))  # the first alone, 20 together
        stored = [await direct.get_doc(db, doc["_id"]) for doc in docs]
        assert [doc["_rev"] for doc in updated] == [doc["_rev"] for doc in stored]
        docs = stored


async def test_concurrent_box_reads_each_answer_their_own_box(api: Api) -> None:
    boxes = [(await api.put("/vmboxes", {"name": f"Box {n}", "mailbox": str(300 + n)})).data for n in range(8)]
    await api.delete(f"/vmboxes/{boxes[5]['id']}")
    replies = await asyncio.gather(*(api.get(f"/vmboxes/{box['id']}") for box in boxes * 3))
    assert [(r.status, r.data.get("name") if r.status == 200 else None) for r in replies] == [
        (404, None) if box is boxes[5] else (200, box["name"]) for box in boxes * 3]


async def test_concurrent_message_creates_are_all_stored(api: Api, vmbox: dict[str, Any]) -> None:
    replies = await asyncio.gather(*(api.put(f"/vmboxes/{vmbox['id']}/messages",
                                             {"caller_id_number": str(5550000 + n)}) for n in range(25)))
    assert [(r.status, r.body) for r in replies if r.status != 201] == []
    listed = (await api.get(f"/vmboxes/{vmbox['id']}/messages")).data
    assert sorted(m["media_id"] for m in listed) == sorted(r.data["media_id"] for r in replies)


async def test_a_document_the_store_refuses_fails_alone_in_its_group(
        slow_couch: Couch, services: Services, db: str) -> None:
    # Apache CouchDB refuses a whole _bulk_docs for one illegal id (and writes nothing).
    docs = [{"_id": "first"}, {"_id": "second"}, {"_id": "_illegal"}, {"_id": "third"}]
    answers = await asyncio.gather(*(slow_couch.put_doc(db, doc) for doc in docs), return_exceptions=True)
    assert [isinstance(a, StoreFault) for a in answers] == [False, False, True, False]
    stored = await services.store.couch.all_docs(db, ["first", "second", "third"])
    assert [row["doc"]["_rev"] for row in stored] == [answers[0], answers[1], answers[3]]


async def test_a_store_outage_fails_every_waiting_caller_and_the_next_reads_succeed(
        slow_couch: Couch, proxy: TcpProxy, services: Services, db: str) -> None:
    await services.store.couch.put_doc(db, {"_id": "doc"})
    await services.store.couch.put_doc(db, {"_id": "other"})
    reads = [asyncio.create_task(slow_couch.get_doc(db, doc_id)) for doc_id in ("doc", "other", "doc")]
    await asyncio.sleep(DELAY / 2)  # the first is out, the others wait behind it
    await proxy.stop()
    answers = await asyncio.wait_for(asyncio.gather(*reads, return_exceptions=True), timeout=20)
    assert [type(a) for a in answers] == [Unavailable] * 3
    await proxy.start()
    again = await asyncio.gather(slow_couch.get_doc(db, "doc"), slow_couch.get_doc(db, "other"))
    assert [doc["_id"] for doc in again] == ["doc", "other"]


async def test_closing_the_connection_cancels_every_read_waiting_or_grouped(
        slow_couch: Couch, services: Services, db: str) -> None:
    await services.store.couch.put_doc(db, {"_id": "doc"})
    first = asyncio.create_task(slow_couch.get_doc(db, "doc"))
    await asyncio.sleep(0.05)
    grouped = [asyncio.create_task(slow_couch.get_doc(db, doc_id)) for doc_id in ("doc", "other")]
    await asyncio.sleep(DELAY * 2.6)  # the first is back, the two go out as a group
    late = [asyncio.create_task(slow_couch.get_doc(db, doc_id)) for doc_id in ("doc", "other")]
    await asyncio.sleep(0.05)
    await asyncio.wait_for(slow_couch.close(), timeout=10)
    answers = await asyncio.wait_for(asyncio.gather(first, *grouped, *late, return_exceptions=True), timeout=10)
    assert isinstance(answers[0], dict | Unavailable)
    assert [type(a) for a in answers[1:]] == [asyncio.CancelledError] * 4
