"""Concurrency: 20 clients at once on the same box and the same messages.

Every document write goes through its revision: a request that loses a race is retried
a bounded number of times or answered 409 ``datastore_conflict`` — never a 200 whose
change is missing afterwards (a lost update), never a 5xx. Moves write the copy before
they remove the source, so a message is never lost; and it must never end up in two
boxes either.

Scenarios, each run ``ROUNDS`` times (3; more with ``KAZOO_VM_CONCURRENCY_ROUNDS``, ``tox -e model``: 50):

* 20 PATCHes of distinct keys of one box: every key whose PATCH got 200 is stored;
* 20 folder changes of one message: the stored folder is one that got 200, and the
  document's revision count is exactly one per 200;
* 20 moves of one message to different boxes: afterwards it is in exactly one box
  (listings of every box, and the MODB documents), with its audio;
* two moves, an audio upload (sent 0 to 36 ms later) and a folder change of one
  message: the message ends with the uploaded audio exactly when the upload got 201;
* moves, single and bulk folder changes, bulk moves and bulk deletes of a set of
  messages at once: every message is in exactly one box or soft-deleted, with its audio.

The figures (rounds, requests, statuses, conflicts, lost updates, duplicates) are
printed and written to ``KAZOO_VM_CONCURRENCY_REPORT`` (default
``/tmp/kazoo_vm_concurrency_report.json``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Iterator
from typing import Any

import pytest
from conftest import Api, Reply, build_multipart

from kazoo_vm.kazoo import naming
from kazoo_vm.services import Services
from kazoo_vm.storage.couch import quote_db

CLIENTS = 20
ROUNDS = int(os.environ.get("KAZOO_VM_CONCURRENCY_ROUNDS") or 3)
REPORT = os.environ.get("KAZOO_VM_CONCURRENCY_REPORT") or "/tmp/kazoo_vm_concurrency_report.json"
GREGORIAN_UNIX_OFFSET = 62167219200
DAY = 86400
FOLDERS = ("new", "saved", "deleted")

FIGURES: dict[str, Counter[str]] = defaultdict(Counter)


@pytest.fixture(scope="module", autouse=True)
def report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    store = "CouchDB at KAZOO_VM_COUCH_URL" if os.environ.get("KAZOO_VM_COUCH_URL") else "pouchdb-server"
    figures = {"store": store, "clients": CLIENTS, "rounds_per_scenario": ROUNDS,
               "scenarios": {name: dict(sorted(counts.items())) for name, counts in sorted(FIGURES.items())}}
    try:
        with open(REPORT, "w") as out:
            json.dump(figures, out, indent=1)
    except OSError:
        pass
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\nconcurrency ({store}, {CLIENTS} clients):")
        for name, counts in sorted(FIGURES.items()):
            reporter.write_line(f"  {name}: " + ", ".join(f"{key} {value}" for key, value in sorted(counts.items())))


# -- helpers ---------------------------------------------------------------------------


def gregorian_now() -> int:
    return int(time.time()) + GREGORIAN_UNIX_OFFSET


def multipart(metadata: dict[str, Any], audio: bytes) -> tuple[bytes, str]:
    boundary = "kazoo-vm-concurrency-" + uuid.uuid4().hex
    parts = [({"Content-Type": "application/json"}, json.dumps({"data": metadata}).encode()),
             ({"Content-Type": "audio/mpeg"}, audio)]
    return build_multipart(parts, boundary=boundary)


async def new_box(api: Api, name: str) -> str:
    mailbox = str(10000 + int(uuid.uuid4().int % 10**9))
    reply = await api.put("/vmboxes", {"name": name, "mailbox": mailbox})
    assert reply.status == 201, reply.body
    return str(reply.data["id"])


async def new_message(api: Api, box: str, audio: bytes) -> dict[str, Any]:
    body, content_type = multipart({"caller_id_number": "6001", "call_id": uuid.uuid4().hex}, audio)
    reply = await api.call("PUT", f"/vmboxes/{box}/messages", body=body, headers={"Content-Type": content_type})
    assert reply.status == 201, reply.body
    return dict(reply.data)


def error_message(reply: Reply) -> str | None:
    try:
        body = reply.json
    except ValueError:
        return None
    return body.get("message") if isinstance(body, dict) else None


def tally(scenario: str, replies: list[Reply], allowed: dict[int, set[str]], problems: list[str],
          what: str) -> None:
    """Count the statuses; anything but 200 or an allowed Kazoo error is a problem."""
    figures = FIGURES[scenario]
    for reply in replies:
        figures["requests"] += 1
        figures[f"status {reply.status}"] += 1
        if reply.status == 200:
            continue
        message = error_message(reply)
        if message == "datastore_conflict":
            figures["conflicts answered 409"] += 1
        if message not in allowed.get(reply.status, set()):
            figures["unexpected answers"] += 1
            problems.append(f"{what}: unexpected answer {reply.status} {reply.body[:300]!r}")


async def modb_messages(services: Services, account_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every ``mailbox_message`` document of the account's MODBs around now (soft-deleted
    ones included), with its database."""
    now = gregorian_now()
    found = []
    couch = services.store.couch
    for db in naming.modbs_between(account_id, now - 2 * DAY, now + 2 * DAY):
        if not await couch.db_exists(db):
            continue
        body = await couch.get_json(f"/{quote_db(db)}/_all_docs", include_docs=True)
        for row in body["rows"]:
            doc = row.get("doc")
            if isinstance(doc, dict) and doc.get("pvt_type") == "mailbox_message":
                found.append((db, doc))
    return found


async def listed_everywhere(api: Api, boxes: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each box's listed messages (unpaginated)."""
    replies = await asyncio.gather(*(api.get(f"/vmboxes/{box}/messages", params={"paginate": "false"})
                                     for box in boxes))
    for reply in replies:
        assert reply.status == 200, reply.body
    return {box: list(reply.data) for box, reply in zip(boxes, replies, strict=True)}


async def check_every_message_once(api: Api, services: Services, boxes: list[str],
                                   originals: dict[str, bytes], scenario: str, problems: list[str],
                                   what: str) -> None:
    """Each original message (by ``call_id``) is in exactly one document: listed in
    exactly one box when live, not listed when soft-deleted; and it has its audio."""
    figures = FIGURES[scenario]
    for key in ("messages lost", "messages in two boxes", "messages in two documents", "messages without their audio"):
        figures[key] += 0
    docs_by_call: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for db, doc in await modb_messages(services, api.account_id):
        docs_by_call[str((doc.get("metadata") or {}).get("call_id"))].append((db, doc))
    listed = await listed_everywhere(api, boxes)
    listed_by_call: dict[str, list[str]] = defaultdict(list)
    for box, rows in listed.items():
        for row in rows:
            listed_by_call[str(row.get("call_id"))].append(box)
    for call_id, audio in originals.items():
        figures["messages checked"] += 1
        docs = docs_by_call.get(call_id, [])
        live = [doc for _db, doc in docs if not doc.get("pvt_deleted")]
        if not docs:
            figures["messages lost"] += 1
            problems.append(f"{what}: message {call_id} is lost (no document left)")
            continue
        if len(docs) > 1:
            figures["messages in two documents"] += 1
            problems.append(f"{what}: message {call_id} is in {len(docs)} documents: "
                            + ", ".join(f"{doc['_id']} box {doc.get('source_id')} "
                                        f"{'soft-deleted' if doc.get('pvt_deleted') else 'live'}"
                                        for _db, doc in docs))
        boxes_listing_it = listed_by_call.get(call_id, [])
        if len(boxes_listing_it) > 1 or len(live) > 1:
            figures["messages in two boxes"] += 1
            problems.append(f"{what}: message {call_id} is listed in boxes {boxes_listing_it} "
                            f"(live documents in {[doc.get('source_id') for doc in live]})")
        if len(live) == 1 and boxes_listing_it != [live[0].get("source_id")]:
            problems.append(f"{what}: live message {call_id} of box {live[0].get('source_id')} is listed in "
                            f"{boxes_listing_it}")
        if not live and boxes_listing_it:
            problems.append(f"{what}: soft-deleted message {call_id} is listed in {boxes_listing_it}")
        for db, doc in docs:
            stored = await services.messages.audio(db, doc)
            if stored is None or stored.data != audio:
                figures["messages without their audio"] += 1
                problems.append(f"{what}: document {doc['_id']} of message {call_id} lacks its audio")


# -- 20 PATCHes of one box -------------------------------------------------------------


async def test_concurrent_patches_of_one_box_lose_no_update(api: Api) -> None:
    scenario = "patch one box"
    problems: list[str] = []
    FIGURES[scenario]["lost updates"] += 0
    for round_ in range(ROUNDS):
        box = await new_box(api, f"patched {round_}")
        replies = await asyncio.gather(*(api.patch(f"/vmboxes/{box}", {f"key_{i}": i}) for i in range(CLIENTS)))
        tally(scenario, replies, {409: {"datastore_conflict"}}, problems, f"round {round_}")
        stored = (await api.get(f"/vmboxes/{box}")).data
        FIGURES[scenario]["rounds"] += 1
        for i, reply in enumerate(replies):
            if reply.status != 200:
                continue
            FIGURES[scenario]["updates answered 200"] += 1
            if stored.get(f"key_{i}") != i:
                FIGURES[scenario]["lost updates"] += 1
                problems.append(f"round {round_}: PATCH key_{i} answered 200 but the box lacks it")
            for j in range(CLIENTS):  # an answer shows the box as stored by that write
                if f"key_{j}" in reply.data and stored.get(f"key_{j}") != j:
                    FIGURES[scenario]["lost updates"] += 1
                    problems.append(f"round {round_}: key_{j} was in a 200 answer but is not stored")
        if not any(reply.status == 200 for reply in replies):
            problems.append(f"round {round_}: no PATCH succeeded")
    assert not problems, "\n".join(problems)


# -- 20 folder changes of one message ---------------------------------------------------


async def test_concurrent_folder_changes_of_one_message_lose_no_update(api: Api, services: Services) -> None:
    scenario = "folder changes of one message"
    problems: list[str] = []
    FIGURES[scenario]["lost updates"] += 0
    box = await new_box(api, "folders")
    for round_ in range(ROUNDS):
        created = await new_message(api, box, b"ID3" + bytes([round_]) * 40)
        message_id = created["media_id"]
        wanted = [FOLDERS[i % 3] for i in range(CLIENTS)]
        replies = await asyncio.gather(*(api.post(f"/vmboxes/{box}/messages/{message_id}", {"folder": folder})
                                         for folder in wanted))
        tally(scenario, replies, {409: {"datastore_conflict"}}, problems, f"round {round_}")
        FIGURES[scenario]["rounds"] += 1
        succeeded = [folder for folder, reply in zip(wanted, replies, strict=True) if reply.status == 200]
        FIGURES[scenario]["updates answered 200"] += len(succeeded)
        for folder, reply in zip(wanted, replies, strict=True):
            if reply.status == 200 and reply.data.get("folder") != folder:
                problems.append(f"round {round_}: a change to {folder} answered {reply.data.get('folder')}")
        db = naming.modb_of_message(api.account_id, message_id)
        assert db is not None
        doc = await services.store.couch.get_doc(db, message_id)
        generation = int(doc["_rev"].split("-")[0])
        final = doc["metadata"]["folder"]
        if not succeeded:
            problems.append(f"round {round_}: no folder change succeeded")
        elif final not in succeeded:
            FIGURES[scenario]["lost updates"] += 1
            problems.append(f"round {round_}: stored folder {final} is none of the answered {succeeded}")
        if generation != 1 + len(succeeded):
            FIGURES[scenario]["lost updates"] += abs(generation - 1 - len(succeeded))
            problems.append(f"round {round_}: revision {doc['_rev']} after {len(succeeded)} answered changes "
                            f"(expected generation {1 + len(succeeded)})")
        got = await api.get(f"/vmboxes/{box}/messages/{message_id}")
        if got.status != 200 or got.data.get("folder") != final:
            problems.append(f"round {round_}: GET answers {got.status} {got.body[:200]!r}, stored folder {final}")
    assert not problems, "\n".join(problems)


# -- 20 moves of one message -------------------------------------------------------------


async def test_concurrent_moves_of_one_message_leave_it_in_exactly_one_box(api: Api, services: Services) -> None:
    scenario = "moves of one message"
    problems: list[str] = []
    source = await new_box(api, "source")
    destinations = list(await asyncio.gather(*(new_box(api, f"destination {i}") for i in range(5))))
    boxes = [source, *destinations]
    originals: dict[str, bytes] = {}
    for round_ in range(ROUNDS):
        audio = b"ID3" + uuid.uuid4().bytes * 3
        created = await new_message(api, source, audio)
        call_id = created["call_id"]
        originals[call_id] = audio
        replies = await asyncio.gather(*(
            api.post(f"/vmboxes/{source}/messages/{created['media_id']}",
                     {"source_id": destinations[i % len(destinations)]})
            for i in range(CLIENTS)))
        tally(scenario, replies, {404: {"bad_identifier"}, 409: {"datastore_conflict"}}, problems,
              f"round {round_}")
        FIGURES[scenario]["rounds"] += 1
        moved = {reply.data["media_id"] for reply in replies if reply.status == 200}
        FIGURES[scenario]["moves answered 200"] += sum(reply.status == 200 for reply in replies)
        if not moved:
            problems.append(f"round {round_}: no move succeeded")
        if len(moved) > 1:
            FIGURES[scenario]["rounds where several moves answered 200"] += 1
            problems.append(f"round {round_}: {len(moved)} moves to different boxes answered 200 "
                            f"(new ids {sorted(moved)})")
        await check_every_message_once(api, services, boxes, {call_id: audio}, scenario, problems,
                                       f"round {round_}")
    assert not problems, "\n".join(problems)


# -- an audio upload racing moves -------------------------------------------------------


async def later(delay: float, request: Awaitable[Reply]) -> Reply:
    """``request`` sent ``delay`` seconds after the others (each step of a move is
    reached in some round)."""
    await asyncio.sleep(delay)
    return await request


async def test_an_upload_racing_moves_is_in_the_message_wherever_it_ends_or_refused(
        api: Api, services: Services) -> None:
    scenario = "upload racing moves"
    problems: list[str] = []
    source = await new_box(api, "source")
    destinations = list(await asyncio.gather(*(new_box(api, f"destination {i}") for i in range(2))))
    for round_ in range(max(ROUNDS, 20)):
        before, after = b"ID3" + uuid.uuid4().bytes * 3, b"ID3" + uuid.uuid4().bytes * 4
        created = await new_message(api, source, before)
        path = f"/vmboxes/{source}/messages/{created['media_id']}"
        replies = await asyncio.gather(
            api.post(path, {"source_id": destinations[0]}), api.post(path, {"source_id": destinations[1]}),
            later(round_ % 10 * 0.004,
                  api.call("PUT", f"{path}/raw", body=after, headers={"Content-Type": "audio/mpeg"})),
            api.post(path, {"folder": "saved"}))
        upload = replies[2]
        tally(scenario, [*replies[:2], replies[3]], {404: {"bad_identifier"}, 409: {"datastore_conflict"}},
              problems, f"round {round_}")
        if upload.status not in (201, 404, 409):
            problems.append(f"round {round_}: upload answered {upload.status} {upload.body[:200]!r}")
        FIGURES[scenario]["rounds"] += 1
        FIGURES[scenario][f"upload {upload.status}"] += 1
        # The message has the uploaded audio if and only if the upload was answered 201.
        await check_every_message_once(api, services, [source, *destinations],
                                       {created["call_id"]: after if upload.status == 201 else before},
                                       scenario, problems, f"round {round_}")
    assert not problems, "\n".join(problems)


# -- mixed changes of a set of messages --------------------------------------------------


async def test_concurrent_mixed_changes_lose_and_duplicate_no_message(api: Api, services: Services) -> None:
    scenario = "mixed moves, folder changes, bulk deletes"
    problems: list[str] = []
    home = await new_box(api, "home")
    others = list(await asyncio.gather(*(new_box(api, f"other {i}") for i in range(3))))
    boxes = [home, *others]
    originals: dict[str, bytes] = {}
    for round_ in range(ROUNDS):
        audios = [b"ID3" + bytes([round_, index]) + uuid.uuid4().bytes for index in range(6)]
        messages = await asyncio.gather(*(new_message(api, home, audio) for audio in audios))
        originals.update({message["call_id"]: audio for message, audio in zip(messages, audios, strict=True)})
        created = [message["media_id"] for message in messages]
        requests = []
        for i in range(CLIENTS):
            target = created[i % len(created)]
            kind = i % 5
            if kind == 0:
                requests.append(api.post(f"/vmboxes/{home}/messages/{target}", {"source_id": others[i % 3]}))
            elif kind == 1:
                requests.append(api.post(f"/vmboxes/{home}/messages/{target}", {"folder": FOLDERS[i % 3]}))
            elif kind == 2:
                requests.append(api.delete(f"/vmboxes/{home}/messages", {"messages": created[i % 3::2]}))
            elif kind == 3:
                requests.append(api.post(f"/vmboxes/{home}/messages",
                                         {"messages": created[(i + 1) % 6:], "source_id": others[(i + 1) % 3]}))
            else:
                requests.append(api.post(f"/vmboxes/{home}/messages", {"messages": created, "folder": "saved"}))
        replies = await asyncio.gather(*requests)
        tally(scenario, replies, {404: {"bad_identifier"}, 409: {"datastore_conflict"}}, problems,
              f"round {round_}")
        for reply in replies:
            if reply.status == 200 and isinstance(reply.data, dict):
                for reason in (reply.data.get("failed") or {}).values():
                    FIGURES[scenario][f"bulk items failed {reason}"] += 1
        FIGURES[scenario]["rounds"] += 1
    await check_every_message_once(api, services, boxes, originals, scenario, problems, "after all rounds")
    assert not problems, "\n".join(problems)
