"""The six scenarios: one service request against the raw CouchDB requests that do the
same work, on the same data, at the same concurrency, from the same client.

Each scenario loads its own account (so writes of one never touch the views another
reads), checks once that the service answers what the scenario expects, then measures
every variant at every concurrency with :func:`client.paired`.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from kazoo_vm.kazoo import documents, naming
from kazoo_vm.storage import design
from kazoo_vm.storage.couch import encode_params, quote_doc

from . import client, sizing
from .client import Operation
from .context import (
    JSON_TYPE,
    PAGE_SIZE,
    Context,
    ScenarioError,
    account_path,
    db_path,
    measure_all,
    sender,
    view_path,
    window_now,
)
from .load import Account, Written
from .processes import PeakMemory
from .results import Measurement, ScenarioResult

AUDIO_TYPE = "audio/mpeg"


# -- 1. one box ------------------------------------------------------------------------

async def get_vmbox(ctx: Context, result: ScenarioResult) -> None:
    loader = ctx.loader
    account = await loader.account("bench reads")
    boxes = await loader.boxes(account, 10)
    box = boxes[3]
    service = await ctx.service_for(account)
    result.loaded()
    body = await client.call(ctx.session, service.first, "GET", account_path(account, f"/vmboxes/{box['_id']}"))
    if json.loads(body)["data"].get("id") != box["_id"]:
        raise ScenarioError("GET /vmboxes/{B} did not return the box")
    await measure_all(
        ctx, result, "one box",
        raw=sender(ctx.session, ctx.couch, "GET", db_path(account.db, f"/{quote_doc(box['_id'])}")),
        service=sender(ctx.session, service, "GET", account_path(account, f"/vmboxes/{box['_id']}")),
        openers=ctx.openers(account, service),
    )
    # Concurrent reads of one document share CouchDB requests in the service: the same
    # reads spread over ten boxes show what it does when they cannot.
    await measure_all(
        ctx, result, "10 boxes",
        raw=rotating(ctx.session, ctx.couch, [db_path(account.db, f"/{quote_doc(b['_id'])}") for b in boxes]),
        service=rotating(ctx.session, service, [account_path(account, f"/vmboxes/{b['_id']}") for b in boxes]),
        openers=ctx.openers(account, service),
    )


def rotating(session: aiohttp.ClientSession, servers: client.Spread, paths: list[str]) -> Operation:
    """GET of each path in turn (whichever worker asks; worker ``w`` to ``servers.at(w)``)."""
    turn = itertools.count()

    async def operation(worker: int) -> int:
        return len(await client.call(session, servers.at(worker), "GET", paths[next(turn) % len(paths)]))

    return operation


# -- 2. create a message (JSON) --------------------------------------------------------

async def put_message(ctx: Context, result: ScenarioResult) -> None:
    loader = ctx.loader
    account = await loader.account("bench writes")
    (box,) = await loader.boxes(account, 1)
    service = await ctx.service_for(account)
    now = documents.gregorian_now()
    template = loader.message_doc(account, box, now, "new")
    db = await loader.ensure_modb(account, template["_id"])
    request = {key: value for key, value in template["metadata"].items()
               if key in ("caller_id_number", "caller_id_name", "length", "folder")}
    service_body = json.dumps({"data": request}).encode()
    result.loaded()

    async def raw(worker: int) -> int:
        doc = dict(template)
        doc["_id"] = f"{template['_id'][:6]}-{secrets.token_hex(16)}"
        doc["metadata"] = {**template["metadata"], "media_id": doc["_id"],
                           "call_id": secrets.token_hex(12)}
        body = json.dumps(doc, separators=(",", ":")).encode()
        return len(await client.call(ctx.session, ctx.couch.at(worker), "PUT", db_path(db, f"/{doc['_id']}"),
                                     data=body, headers=JSON_TYPE, expect=(201, 202)))

    created = json.loads(await client.call(ctx.session, service.first, "PUT",
                                           account_path(account, f"/vmboxes/{box['_id']}/messages"),
                                           data=service_body, headers=JSON_TYPE, expect=(201,)))
    if not str(created["data"].get("media_id", "")).startswith(template["_id"][:6]):
        raise ScenarioError(f"the created message is not in this month's MODB: {created['data']}")
    await measure_all(
        ctx, result, "JSON",
        raw=raw,
        service=sender(ctx.session, service, "PUT", account_path(account, f"/vmboxes/{box['_id']}/messages"),
                       expect=(201,), body=service_body, headers=JSON_TYPE),
        openers=ctx.openers(account, service),
    )


# -- 3. one page of a box --------------------------------------------------------------

def page_reader(ctx: Context, modbs: list[str], box_id: str) -> Operation:
    """The listing view queries behind one page: each MODB of the window, newest
    first, until ``PAGE_SIZE + 1`` rows (the page and the next start key)."""

    async def operation(worker: int) -> int:
        since, until = window_now()
        wanted, received = PAGE_SIZE + 1, 0
        for db in modbs:
            params = encode_params({"descending": True, "startkey": [box_id, until, {}],
                                    "endkey": [box_id, since], "limit": wanted})
            body = await client.call(ctx.session, ctx.couch.at(worker), "GET",
                                     view_path(db, design.MAILBOX_MESSAGES, "listing_by_mailbox"), params=params)
            received += len(body)
            wanted -= len(json.loads(body)["rows"])
            if wanted <= 0:
                break
        return received

    return operation


async def load_pages(ctx: Context, result: ScenarioResult) -> tuple[Account, list[dict[str, Any]], tuple[int, ...]]:
    """The account, its boxes and their sizes. Without given sizes, the largest box's
    first messages (``page_range.sample``) are loaded, indexed and timed, to choose
    the sizes that fit the budget (:func:`sizing.page_boxes`)."""
    loader, sizes = ctx.loader, ctx.settings.sizes
    account = await loader.account("bench pages")
    page_boxes = sizes.page_boxes
    boxes = await loader.boxes(account, len(page_boxes) if page_boxes else 3)
    loaded = [0] * len(boxes)
    if not page_boxes:
        started = time.perf_counter()
        sample = sizes.page_range.sample
        await loader.messages(account, boxes, sample, box_for=lambda _index: len(boxes) - 1)
        await loader.warm_modbs(account, ["listing_by_mailbox"])
        rate = sample / (time.perf_counter() - started)
        page_boxes = sizing.page_boxes(sizes.page_range, rate, sizes.budget_seconds)
        loaded[-1] = sample
        result.extra["calibration"] = {"docs_per_s": round(rate, 1), "sample": sample}
    owners = [index for index, count in enumerate(page_boxes) for _ in range(count - loaded[index])]
    loader.rng.shuffle(owners)
    await loader.messages(account, boxes, len(owners), box_for=owners.__getitem__)
    await loader.warm_modbs(account, ["listing_by_mailbox"])
    result.extra["sizes"] = {"page_boxes": list(page_boxes)}
    return account, boxes, tuple(page_boxes)


async def box_page(ctx: Context, result: ScenarioResult) -> None:
    sizes = ctx.settings.sizes
    account, boxes, page_boxes = await load_pages(ctx, result)
    service = await ctx.service_for(account)
    result.loaded()
    modbs = existing_modbs(ctx, account)
    for box, count in zip(boxes, page_boxes, strict=True):
        path = account_path(account, f"/vmboxes/{box['_id']}/messages")
        page = json.loads(await client.call(ctx.session, service.first, "GET", path))
        if len(page["data"]) != min(count, PAGE_SIZE):
            raise ScenarioError(f"box of {count}: a page of {len(page['data'])} messages")
        await measure_all(ctx, result, f"box={count:,}", raw=page_reader(ctx, modbs, box["_id"]),
                          service=sender(ctx.session, service, "GET", path), openers=ctx.openers(account, service))
    smallest, largest = f"box={min(page_boxes):,}", f"box={max(page_boxes):,}"
    growth: dict[str, Any] = {}
    for concurrency in sizes.concurrency:
        by_variant = {m.variant: m for m in result.measurements if m.concurrency == concurrency}
        low, high = by_variant[smallest], by_variant[largest]
        growth[str(concurrency)] = {
            "service_p50": _ratio(high.service.p50, low.service.p50),
            "raw_p50": _ratio(high.raw.p50, low.raw.p50),
            "service_rps": _ratio(high.service.rps, low.service.rps),
            "raw_rps": _ratio(high.raw.rps, low.raw.rps),
        }
    result.extra["size_ratio"] = {"largest": max(page_boxes), "smallest": min(page_boxes),
                                  "by_concurrency": growth}


# -- 4. audio upload and download ------------------------------------------------------

async def audio(ctx: Context, result: ScenarioResult) -> None:
    loader, sizes = ctx.loader, ctx.settings.sizes
    account = await loader.account("bench audio")
    (box,) = await loader.boxes(account, 1)
    workers = max(sizes.concurrency)
    recent = documents.gregorian_now() - 120
    (download,) = await loader.messages(account, [box], 1, timestamps=[recent], audio_bytes=sizes.audio_bytes)
    service_docs = await loader.messages(account, [box], workers, timestamps=[recent] * workers)
    raw_docs = await loader.messages(account, [box], workers, timestamps=[recent] * workers)
    service = await ctx.service_for(account)
    result.loaded()
    payload = loader.rng.randbytes(sizes.audio_bytes)
    box_path = account_path(account, f"/vmboxes/{box['_id']}/messages")
    assert download.attachment is not None

    fetched = await client.call(ctx.session, service.first, "GET", f"{box_path}/{download.doc_id}/raw")
    if len(fetched) != sizes.audio_bytes:
        raise ScenarioError(f"the download returned {len(fetched)} bytes, not {sizes.audio_bytes}")
    await measure_all(
        ctx, result, f"download {sizes.audio_bytes // 1024} KiB",
        raw=sender(ctx.session, ctx.couch, "GET",
                   db_path(download.db, f"/{download.doc_id}/{quote_doc(download.attachment)}"),
                   headers={"Accept": "*/*"}),
        service=sender(ctx.session, service, "GET", f"{box_path}/{download.doc_id}/raw"),
        openers=ctx.openers(account, service),
    )

    revisions = {index: written.rev for index, written in enumerate(raw_docs)}

    async def raw_upload(worker: int) -> int:
        written = raw_docs[worker]
        body = await client.call(ctx.session, ctx.couch.at(worker), "PUT",
                                 db_path(written.db, f"/{written.doc_id}/audio.mp3"),
                                 params={"rev": revisions[worker]}, data=payload,
                                 headers={"Content-Type": AUDIO_TYPE}, expect=(201, 202))
        revisions[worker] = json.loads(body)["rev"]
        return len(body)

    async def service_upload(worker: int) -> int:
        path = f"{box_path}/{service_docs[worker].doc_id}/raw"
        return len(await client.call(ctx.session, service.at(worker), "PUT", path, data=payload,
                                     headers={"Content-Type": AUDIO_TYPE}, expect=(201,)))

    await measure_all(ctx, result, f"upload {sizes.audio_bytes // 1024} KiB", raw=raw_upload,
                      service=service_upload, openers=ctx.openers(account, service))


# -- 5. the box listing with counts ----------------------------------------------------

def listing_reader(ctx: Context, account: Account, modbs: list[str]) -> Operation:
    """The view queries behind ``GET /vmboxes``: a page of ``crossbar_listing`` and
    ``count_per_folder`` over the window on each MODB."""

    async def operation(worker: int) -> int:
        couch = ctx.couch.at(worker)
        since, until = window_now()
        received = len(await client.call(
            ctx.session, couch, "GET", view_path(account.db, design.VMBOXES, "crossbar_listing"),
            params=encode_params({"descending": True, "startkey": {}, "endkey": None, "limit": PAGE_SIZE + 1})))
        for db in modbs:
            received += len(await client.call(
                ctx.session, couch, "GET", view_path(db, design.MAILBOX_MESSAGES, "count_per_folder"),
                params=encode_params({"startkey": ["deleted", since], "endkey": ["saved", until, {}]})))
        return received

    return operation


async def load_listing(ctx: Context, result: ScenarioResult, account: Account,
                       boxes: list[dict[str, Any]]) -> list[int]:
    """Scenario 5's messages (the index of each one's box). Without a given count,
    ``listing_range.sample`` messages are loaded first and the raw listing over them timed,
    to choose the count that fits the budget (:func:`sizing.listing_messages`)."""
    loader, sizes = ctx.loader, ctx.settings.sizes
    wanted = sizes.listing_messages
    owners: list[int] = []
    if not wanted:
        owners = [loader.rng.randrange(len(boxes)) for _ in range(sizes.listing_range.sample)]
        await loader.messages(account, boxes, len(owners), box_for=owners.__getitem__)
        await loader.warm(account.db, design.VMBOXES, ["crossbar_listing"])
        await loader.warm_modbs(account, ["count_per_folder"])
        reader = listing_reader(ctx, account, existing_modbs(ctx, account))
        timings = []
        for _attempt in range(3):
            started = time.perf_counter()
            await reader(0)
            timings.append(time.perf_counter() - started)
        per_request = sorted(timings)[1]
        wanted = sizing.listing_messages(sizes.listing_range, per_request, len(owners), sizes.concurrency,
                                         sizes.budget_seconds)
        result.extra["calibration"] = {"listing_s": round(per_request, 4), "sample": len(owners)}
    more = [loader.rng.randrange(len(boxes)) for _ in range(max(wanted - len(owners), 0))]
    await loader.messages(account, boxes, len(more), box_for=more.__getitem__)
    await loader.warm(account.db, design.VMBOXES, ["crossbar_listing"])
    await loader.warm_modbs(account, ["count_per_folder"])
    result.extra["sizes"] = {"listing_messages": wanted}
    return owners + more


def existing_modbs(ctx: Context, account: Account) -> list[str]:
    """The account's MODBs of the listing window that the loader created, newest first."""
    since, until = window_now()
    return [db for db in naming.modbs_between(account.account_id, since, until) if db in ctx.loader.databases]


async def vmbox_listing(ctx: Context, result: ScenarioResult) -> None:
    loader, sizes = ctx.loader, ctx.settings.sizes
    account = await loader.account("bench listing")
    boxes = await loader.boxes(account, sizes.listing_boxes)
    owners = await load_listing(ctx, result, account, boxes)
    service = await ctx.service_for(account)
    result.loaded()
    per_box = Counter(boxes[owner]["_id"] for owner in owners)
    listing = json.loads(await client.call(ctx.session, service.first, "GET", account_path(account, "/vmboxes")))
    rows = listing["data"]
    if len(rows) != min(PAGE_SIZE, len(boxes)) or any(row.get("messages") != per_box[row["id"]] for row in rows):
        raise ScenarioError("GET /vmboxes did not count every box's messages")
    await measure_all(ctx, result, f"{len(boxes):,} boxes, {len(owners):,} msgs",
                      raw=listing_reader(ctx, account, existing_modbs(ctx, account)),
                      service=sender(ctx.session, service, "GET", account_path(account, "/vmboxes")),
                      openers=ctx.openers(account, service))


# -- 6. ZIP download -------------------------------------------------------------------

def zip_reader(ctx: Context, chosen: list[Written]) -> Operation:
    """What a ZIP of ``chosen`` reads from CouchDB: one ``_all_docs`` per MODB, then
    every attachment, one after the other."""
    by_db: dict[str, list[str]] = {}
    for written in chosen:
        by_db.setdefault(written.db, []).append(written.doc_id)

    async def operation(worker: int) -> int:
        couch = ctx.couch.at(worker)
        received = 0
        for db, ids in by_db.items():
            received += len(await client.call(ctx.session, couch, "POST", db_path(db, "/_all_docs"),
                                              params={"include_docs": "true"}, headers=JSON_TYPE,
                                              data=json.dumps({"keys": ids}).encode()))
        for written in chosen:
            assert written.attachment is not None
            path = db_path(written.db, f"/{written.doc_id}/{quote_doc(written.attachment)}")
            received += len(await client.call(ctx.session, couch, "GET", path, headers={"Accept": "*/*"}))
        return received

    return operation


async def zip_download(ctx: Context, result: ScenarioResult) -> None:
    loader, sizes = ctx.loader, ctx.settings.sizes
    account = await loader.account("bench zip")
    (box,) = await loader.boxes(account, 1)
    small, large = sizes.zip_counts
    written = await loader.messages(account, [box], large, audio_bytes=sizes.zip_message_bytes)
    service = await ctx.service_for(account)
    result.loaded()
    path = account_path(account, f"/vmboxes/{box['_id']}/messages/raw")

    def zipper(count: int) -> tuple[Operation, Operation]:
        body = json.dumps({"data": {"messages": [item.doc_id for item in written[:count]]}}).encode()
        return (zip_reader(ctx, written[:count]),
                sender(ctx.session, service, "POST", path, body=body, headers=JSON_TYPE))

    archive = await client.call(ctx.session, service.first, "POST", path, headers=JSON_TYPE,
                                data=json.dumps({"data": {"messages": [written[0].doc_id]}}).encode())
    if not archive.startswith(b"PK"):
        raise ScenarioError("the ZIP download did not return a ZIP archive")
    # 200 x 200 KiB per ZIP is 40 MB: measured at concurrency 1 (against the small ZIP, for
    # memory) and, to stay within the run's time, at higher concurrency with the small ZIP.
    plan = [(small, 1), (large, 1)] + [(small, concurrency) for concurrency in sizes.concurrency if concurrency > 1]
    peaks: dict[str, dict[str, Any]] = {}
    raw_opener, service_opener = ctx.openers(account, service)
    for count, concurrency in plan:
        raw, service_zip = zipper(count)
        await client.run(raw_opener, concurrency, duration=sizes.warmup_seconds, max_requests=concurrency)
        # Each worker makes at least one ZIP; the budget keeps the concurrent runs short.
        budget = max(concurrency, 4 if concurrency == 1 else concurrency)
        raw_sample = await client.run(raw, concurrency, duration=sizes.duration, max_requests=budget)
        await client.run(service_opener, concurrency, duration=sizes.warmup_seconds, max_requests=concurrency)
        # Memory of the first instance (all of concurrency 1, a share above it); CPU of them all.
        memory = PeakMemory(ctx.service_pid)
        cpu_before = ctx.instances.cpu_seconds()
        async with memory.watch():
            service_sample = await client.run(service_zip, concurrency, duration=sizes.duration,
                                              max_requests=budget)
        service_sample.cpu_seconds = ctx.instances.cpu_seconds() - cpu_before
        notes = {"messages": count, "message_bytes": sizes.zip_message_bytes,
                 "peak_rss_kib": memory.peak_kib, "start_rss_kib": memory.start_kib,
                 "hwm_reset": memory.hwm_reset, "rss_samples": memory.samples,
                 "service_mb_per_s": round(service_sample.bytes_per_second / 1e6, 2),
                 "raw_mb_per_s": round(raw_sample.bytes_per_second / 1e6, 2)}
        result.measurements.append(Measurement(f"{count} msgs x {sizes.zip_message_bytes // 1024} KiB",
                                               concurrency, raw_sample, service_sample, notes))
        if concurrency == 1:
            peaks[str(count)] = {"peak_rss_kib": memory.peak_kib, "start_rss_kib": memory.start_kib}
    growth = (peaks[str(large)]["peak_rss_kib"] - peaks[str(small)]["peak_rss_kib"]) / 1024
    result.extra["rss"] = {"small": small, "large": large, "by_count": peaks, "growth_mib": round(growth, 2),
                           "instance": f"first of {len(ctx.instances)}" if len(ctx.instances) > 1 else "only"}


# -- the table of scenarios ------------------------------------------------------------

Runner = Callable[[Context, ScenarioResult], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    """``fresh_service``: run against a service process started for it, so that what
    earlier scenarios left in its heap does not hide memory growth."""

    key: str
    title: str
    service_request: str
    raw_requests: str
    run: Runner
    fresh_service: bool = False


SCENARIOS = (
    Scenario("1", "read one box", "GET /vmboxes/{B}", "GET /{account db}/{B}", get_vmbox),
    Scenario("2", "create a message (JSON)", "PUT /vmboxes/{B}/messages", "PUT /{modb}/{id} of the same document",
             put_message),
    Scenario("3", "one page of a box's messages", "GET /vmboxes/{B}/messages",
             "listing_by_mailbox on each MODB, newest first, until 51 rows", box_page),
    Scenario("4", "audio download and upload", "GET|PUT /vmboxes/{B}/messages/{M}/raw",
             "GET|PUT /{modb}/{M}/{attachment}", audio),
    Scenario("5", "box listing with message counts", "GET /vmboxes",
             "crossbar_listing (51 rows) + count_per_folder on each MODB", vmbox_listing),
    Scenario("6", "ZIP of several messages", "POST /vmboxes/{B}/messages/raw",
             "_all_docs per MODB + GET of every attachment", zip_download, fresh_service=True),
)


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator else None


async def run_scenario(scenario: Scenario, ctx: Context) -> ScenarioResult:
    """Run one scenario; a failure is recorded in the result, never raised."""
    result = ScenarioResult(scenario.key, scenario.title, scenario.service_request, scenario.raw_requests)
    try:
        await scenario.run(ctx, result)
    except Exception as error:  # reported, and the run goes on with the next scenario
        result.error = f"{type(error).__name__}: {error}"
    finally:
        result.measure_seconds = max(time.perf_counter() - result.started - result.load_seconds, 0.0)
    return result
