"""Operator commands: ``serve``, ``accounts create``, ``users create``, ``migrate``,
``replicate``.

Without ``KAZOO_VM_COUCH_URL`` they use the embedded pouchdb-server: ``serve`` starts it
on the data folder and records its address there; the other commands use that running
server, or start one on the same folder for their own run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import urllib.request
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import replace
from typing import Any

from aiohttp import web

from . import appkeys, memory
from .app import create_app, server_options
from .config import Config
from .embedded_store import EmbeddedStore
from .kazoo import naming
from .services import Services
from .storage.errors import StorageError
from .storage.replication import Target

DEMO_FILE = "demo-account.json"
STORE_URL_FILE = "store.url"
# Test-only crash switch (tests/test_crash.py): see install_fault_switch.
FAULT_POINT_ENV = "KAZOO_VM_FAULT_POINT"
FAULT_ACTION_ENV = "KAZOO_VM_FAULT_ACTION"
FAULT_SKIP_ENV = "KAZOO_VM_FAULT_SKIP"


def _answers(url: str) -> bool:
    try:
        request = urllib.request.Request(url + "/", headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextlib.asynccontextmanager
async def couch_url(config: Config, *, serving: bool) -> AsyncIterator[str]:
    """The CouchDB URL to use, starting the embedded store when none is configured."""
    if config.couch_url:
        yield config.couch_url
        return
    url_file = config.data_dir / STORE_URL_FILE
    if not serving and url_file.exists():
        recorded = url_file.read_text().strip()
        if _answers(recorded):
            yield recorded
            return
    store = EmbeddedStore(data_dir=config.data_dir / "couchdb")
    url = await store.astart()
    if serving:
        url_file.write_text(url + "\n")
    try:
        yield url
    finally:
        if serving:
            url_file.unlink(missing_ok=True)
        await store.astop()


@contextlib.asynccontextmanager
async def connected(config: Config) -> AsyncIterator[Services]:
    async with couch_url(config, serving=False) as url:
        services = Services.connect(url, timeout=config.couch_timeout,
                                    connect_timeout=config.couch_connect_timeout)
        try:
            yield services
        finally:
            await services.close()


async def _demo_account(config: Config, services: Services) -> dict[str, Any]:
    """The demo account of the embedded store, created on the first run."""
    path = config.data_dir / DEMO_FILE
    if path.exists():
        return dict(json.loads(path.read_text()))
    account = await services.accounts.create(name="demo", realm="demo.kazoo-vm.local", parent_id=None)
    await services.users.create(account["_id"], username="demo", password="demo", email="demo@example.com",
                                first_name="Demo", last_name="User")
    demo = {"account_id": account["_id"], "api_key": account["pvt_api_key"], "realm": account["realm"],
            "username": "demo", "password": "demo"}
    path.write_text(json.dumps(demo, indent=2) + "\n")
    return demo


def _print_demo(config: Config, demo: dict[str, Any]) -> None:
    base = f"http://{config.host}:{config.port}"
    print(f"""
kazoo_vm is listening on {base} (embedded store, data in {config.data_dir})
Demo account {demo['account_id']} (user demo / password demo). Get a token:

  curl -s -X PUT {base}/v2/api_auth -d '{{"data":{{"api_key":"{demo['api_key']}"}}}}'

then list its voicemail boxes:

  curl -s -H "X-Auth-Token: $TOKEN" {base}/v2/accounts/{demo['account_id']}/vmboxes
""", flush=True)


def install_fault_switch(app: web.Application, env: Mapping[str, str] | None = None) -> None:
    """TEST ONLY. With ``KAZOO_VM_FAULT_POINT`` set (one or more comma-separated points of
    ``Messages._fault``: ``transfer:before_copy``, ``transfer:after_copy`` (moves and copies),
    ``migrate:after_copy``), the process kills itself with SIGKILL when a multi-step write
    reaches such a point, after letting ``KAZOO_VM_FAULT_SKIP`` (default 0) passes
    through. ``KAZOO_VM_FAULT_ACTION`` may only be ``kill``. Never set in production."""
    env = os.environ if env is None else env
    points = {point.strip() for point in (env.get(FAULT_POINT_ENV) or "").split(",") if point.strip()}
    if not points:
        return
    if (env.get(FAULT_ACTION_ENV) or "kill") != "kill":
        raise SystemExit(f"{FAULT_ACTION_ENV} must be 'kill'")
    try:
        skip = int(env.get(FAULT_SKIP_ENV) or 0)
    except ValueError:
        raise SystemExit(f"{FAULT_SKIP_ENV} must be an integer") from None
    passes = {"left": skip}

    async def fault(point: str) -> None:
        if point not in points:
            return
        if passes["left"] > 0:
            passes["left"] -= 1
            return
        os.kill(os.getpid(), signal.SIGKILL)

    async def arm(app: web.Application) -> None:  # after cleanup_ctx made the services
        app[appkeys.SERVICES].messages.fault = fault
        logging.getLogger(__name__).warning("TEST-ONLY fault switch armed: SIGKILL at %s after %d passes",
                                            ",".join(sorted(points)), skip)

    app.on_startup.append(arm)


async def serve(config: Config) -> None:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    memory.return_large_blocks()
    async with couch_url(config, serving=True) as url:
        app = create_app(config, url)
        install_fault_switch(app)
        runner = web.AppRunner(app, access_log=None, **server_options(config))
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        if not config.couch_url:
            services = Services.connect(url, timeout=config.couch_timeout,
                                        connect_timeout=config.couch_connect_timeout)
            try:
                _print_demo(config, await _demo_account(config, services))
            finally:
                await services.close()
        else:
            print(f"kazoo_vm is listening on http://{config.host}:{config.port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await runner.cleanup()


async def create_account(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    async with connected(config) as services:
        doc = await services.accounts.create(name=args.name, realm=args.realm, parent_id=args.parent)
    return {"account_id": doc["_id"], "api_key": doc["pvt_api_key"], "realm": doc["realm"], "name": doc["name"],
            "parent_id": args.parent}


async def create_user(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    async with connected(config) as services:
        doc = await services.users.create(args.account, username=args.username, password=args.password,
                                          email=args.email, first_name=args.first_name, last_name=args.last_name)
    return {"user_id": doc["_id"], "account_id": args.account, "username": doc["username"]}


async def migrate(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    """Move every legacy message of the account (or one box) into its MODB; safe to
    run again after a stop."""
    totals = {"boxes": 0, "migrated": 0, "failed": 0}
    async with connected(config) as services:
        account = await services.accounts.fetch(args.account)
        realm = account.get("realm") or "nodomain"
        if args.box:
            box_ids = [args.box]
        else:
            page = await services.vmboxes.listing(args.account, page_size=None, start=None, descending=False,
                                                  keep_doc=None)
            box_ids = [row["id"] for row in page.rows if (row.get("value") or {}).get("messages")]
        for box_id in box_ids:
            box = await services.vmboxes.fetch(args.account, box_id)
            report = await services.legacy.migrate_box(args.account, box, realm,
                                                       box.get("timezone") or account.get("timezone"))
            totals["boxes"] += 1
            totals["migrated"] += len(report.migrated)
            totals["failed"] += len(report.failed)
            print(f"box {box_id}: migrated {len(report.migrated)}, failed {len(report.failed)}"
                  + "".join(f"\n  {media_id}: {reason}" for media_id, reason in report.failed.items()),
                  file=sys.stderr, flush=True)
    return totals


async def replicate(config: Config, args: argparse.Namespace) -> Any:
    """Set up (or, with ``--status``, show) the replication of an account."""
    async with connected(config) as services:
        await services.accounts.fetch(args.account)
        if args.status:
            return await services.replication.status(args.account)
        if args.stop:
            return {"account_id": args.account, "removed": await services.replication.stop(args.account)}
        if not args.target:
            raise SystemExit("error: --target is required (or --status)")
        target = Target(args.target, continuous=args.continuous, both_ways=args.both_ways)
        ids = await services.replication.replicate(args.account, target)
        return {"account_id": args.account, "target": target.safe_url, "replications": ids}


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m kazoo_vm", description=__doc__.splitlines()[0])
    commands = main.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the API")
    serve_cmd.add_argument("--host")
    serve_cmd.add_argument("--port", type=int)

    accounts = commands.add_parser("accounts", help="manage accounts").add_subparsers(dest="action", required=True)
    account_create = accounts.add_parser("create", help="create an account (prints its id and API key)")
    account_create.add_argument("--name", required=True)
    account_create.add_argument("--realm")
    account_create.add_argument("--parent", metavar="ACCOUNT_ID")

    users = commands.add_parser("users", help="manage users").add_subparsers(dest="action", required=True)
    user_create = users.add_parser("create", help="create a user in an account")
    user_create.add_argument("--account", required=True, metavar="ACCOUNT_ID")
    user_create.add_argument("--username", required=True)
    user_create.add_argument("--password", required=True)
    user_create.add_argument("--email")
    user_create.add_argument("--first-name")
    user_create.add_argument("--last-name")
    migrate_cmd = commands.add_parser("migrate", help="move legacy (pre-MODB) messages into the MODBs")
    migrate_cmd.add_argument("--account", required=True, metavar="ACCOUNT_ID")
    migrate_cmd.add_argument("--box", metavar="VMBOX_ID")
    replicate_cmd = commands.add_parser("replicate", help="replicate an account (all its months) to another CouchDB")
    replicate_cmd.add_argument("--account", required=True, metavar="ACCOUNT_ID")
    replicate_cmd.add_argument("--target", metavar="URL", help="http://user:pass@host:5984 of the other server")
    replicate_cmd.add_argument("--continuous", action="store_true", help="keep replicating (else one pass)")
    replicate_cmd.add_argument("--both-ways", action="store_true", help="also replicate back from the target")
    replicate_cmd.add_argument("--status", action="store_true", help="show each replication's state")
    replicate_cmd.add_argument("--stop", action="store_true", help="remove the account's replications")
    return main


def run_serving(main: Coroutine[Any, Any, None]) -> None:
    """Run the server on uvloop (libuv's event loop: a cheaper loop turn and socket I/O per
    request than asyncio's own) when it is installed, else on asyncio's."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = Config.from_env()
    if args.command == "serve":
        overrides = {key: value for key, value in (("host", args.host), ("port", args.port)) if value}
        run_serving(serve(replace(config, **overrides)))
        return 0

    for name in ("parent", "account"):
        value = getattr(args, name, None)
        if value is not None and not naming.is_account_id(value):
            print(f"error: --{name} must be a 32-hex account id", file=sys.stderr)
            return 2
    if getattr(args, "box", None) is not None and not naming.is_vmbox_id(args.box):
        print("error: --box is not a voicemail box id", file=sys.stderr)
        return 2
    commands = {"accounts": create_account, "users": create_user, "migrate": migrate, "replicate": replicate}
    try:
        result = asyncio.run(commands[args.command](config, args))
    except StorageError as error:
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0
