"""How often each CouchDB read path misses a write just answered, on a cluster.

    python -m bench.staleness --nodes URL1,URL2,URL3 [--writes 1000] [--load 8]

Each try writes one new document through one node and at once reads it through
another, by one read path: ``GET`` of the document, ``_all_docs`` by key, or a view
queried by key. Writes go with CouchDB's default ``w`` (a quorum) and with ``w`` = n (what
kazoo_vm asks for). ``--load`` clients keep writing to the same database meanwhile, so
the copies are busy. Prints one line per (write mode, read path): tries and misses, and
writes ``bench/staleness.json`` (``--output``).

Uses a database of its own (``kazoo_vm_staleness_<random>``), deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from kazoo_vm.storage.couch import CouchEndpoint

PATHS = ("GET document", "_all_docs by key", "view by key")
DESIGN = {"_id": "_design/staleness",
          "views": {"by_key": {"map": "function (doc) { if (doc.key) emit(doc.key, null); }"}}}


class Node:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        endpoint = CouchEndpoint.parse(url)
        self.session, self.url = session, endpoint.url
        self.headers = {"Authorization": endpoint.authorization(), "Content-Type": "application/json"}

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> tuple[int, Any]:
        async with self.session.request(method, self.url + path, params=params or None, headers=self.headers,
                                        data=None if body is None else json.dumps(body)) as response:
            return response.status, json.loads(await response.read() or b"null")


async def seen(node: Node, db: str, path: str, doc_id: str) -> bool:
    if path == "GET document":
        return (await node.call("GET", f"/{db}/{doc_id}"))[0] == 200
    if path == "_all_docs by key":
        status, body = await node.call("POST", f"/{db}/_all_docs", {"keys": [doc_id]})
        return status == 200 and "value" in body["rows"][0] and not body["rows"][0]["value"].get("deleted")
    status, body = await node.call("GET", f"/{db}/_design/staleness/_view/by_key", key=json.dumps(doc_id))
    return status == 200 and len(body["rows"]) == 1


async def measure(nodes: list[Node], db: str, writes: int, copies: int) -> dict[str, dict[str, int]]:
    figures: dict[str, dict[str, int]] = {}
    for mode, params in (("default w", {}), (f"w={copies} (kazoo_vm)", {"w": str(copies)})):
        for path in PATHS:
            misses = 0
            for n in range(writes):
                writer = nodes[n % len(nodes)]
                reader = nodes[(n + 1) % len(nodes)]
                doc_id = uuid.uuid4().hex
                status, _ = await writer.call("POST", f"/{db}", {"_id": doc_id, "key": doc_id}, **params)
                if status not in (201, 202):
                    raise RuntimeError(f"write answered {status}")
                misses += not await seen(reader, db, path, doc_id)
            figures[f"{mode}, {path}"] = {"tries": writes, "misses": misses}
            print(f"{mode:>16}  {path:<18} {misses:5d} misses in {writes}", flush=True)
    return figures


async def load(nodes: list[Node], db: str, stop: asyncio.Event, counter: list[int]) -> None:
    rng = random.Random()
    while not stop.is_set():
        node = rng.choice(nodes)
        await node.call("POST", f"/{db}", {"_id": uuid.uuid4().hex, "key": "load", "pad": "x" * 2000})
        counter[0] += 1


async def main() -> None:
    parser = argparse.ArgumentParser(description="misses of each read path right after a write, on a cluster")
    parser.add_argument("--nodes", required=True, help="the cluster's node URLs, comma-separated, with credentials")
    parser.add_argument("--writes", type=int, default=1000, help="tries per write mode and read path")
    parser.add_argument("--load", type=int, default=8, help="clients writing meanwhile")
    parser.add_argument("--output", default=str(Path(__file__).with_name("staleness.json")))
    args = parser.parse_args()
    urls = [url for url in args.nodes.split(",") if url.strip()]
    if len(urls) < 2:
        parser.error("a cluster of two nodes or more is needed")
    async with aiohttp.ClientSession() as session:
        nodes = [Node(session, url) for url in urls]
        db = f"kazoo_vm_staleness_{uuid.uuid4().hex[:8]}"
        await nodes[0].call("PUT", f"/{db}")
        try:
            _, info = await nodes[0].call("GET", f"/{db}")
            copies = int(info["cluster"]["n"])
            await nodes[0].call("PUT", f"/{db}/{DESIGN['_id']}", DESIGN, w=str(copies))
            stop, counter = asyncio.Event(), [0]
            loaders = [asyncio.create_task(load(nodes, db, stop, counter)) for _ in range(args.load)]
            started = time.monotonic()
            try:
                figures = await measure(nodes, db, args.writes, copies)
            finally:
                stop.set()
                await asyncio.gather(*loaders, return_exceptions=True)
            seconds = time.monotonic() - started
        finally:
            await nodes[0].call("DELETE", f"/{db}")
    result = {"nodes": len(urls), "n": copies, "load_clients": args.load,
              "load_writes_per_second": round(counter[0] / seconds, 1), "figures": figures}
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    print(f"load: {args.load} clients, {result['load_writes_per_second']} writes/s; written {args.output}")


if __name__ == "__main__":
    asyncio.run(main())
