"""README's walk-through, ``examples/walkthrough.sh``, run as a reader runs it: ``serve``
in one process, the script in another, on the test store. The script makes its own
account with the operator command, as it does beside ``./dev serve``."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kazoo_vm.config import PROJECT_ROOT
from kazoo_vm.embedded_store import free_port
from kazoo_vm.services import Services

SCRIPT = PROJECT_ROOT / "examples" / "walkthrough.sh"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/v2/schemas", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def served(couch_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A ``python -m kazoo_vm serve`` on the test store; its URL and the environment the
    operator command needs to reach the same store."""
    folder = tmp_path_factory.mktemp("walkthrough")
    env = {key: value for key, value in os.environ.items() if not key.startswith("KAZOO_VM_")}
    # No move recovery: it would settle the half-done moves other tests leave on purpose.
    # No webhook sender either (see the ``config`` fixture in conftest.py).
    env.update(KAZOO_VM_COUCH_URL=couch_url, KAZOO_VM_DATA_DIR=str(folder), KAZOO_VM_MOVE_RECOVERY="false",
               KAZOO_VM_WEBHOOKS="false")
    url = f"http://127.0.0.1:{free_port()}"
    log = (folder / "serve.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "kazoo_vm", "serve", "--port", url.rsplit(":", 1)[1]],
                               env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not _answers(url):
            assert process.poll() is None, (folder / "serve.log").read_text()
            assert time.monotonic() < deadline, "kazoo_vm did not answer within 60 s"
            time.sleep(0.2)
        yield url, env
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


async def run_script(env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec("sh", str(SCRIPT), env=env, cwd=Path("/"),
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_walkthrough_runs_to_the_end(served: tuple[str, dict[str, str]], services: Services) -> None:
    url, env = served
    code, out, err = await run_script({**env, "KAZOO_VM_URL": url, "KAZOO_VM_CLI": f"{sys.executable} -m kazoo_vm"})
    made = re.search(r"-> account ([0-9a-f]{32})", out)
    if made:  # dropped after the test on a shared CouchDB, like the fixtures' accounts
        services.created_accounts.append(made.group(1))  # type: ignore[attr-defined]
    assert code == 0, out + err
    for line in ("PUT /api_auth\n  -> 201 auth_token",
                 "PUT /user_auth\n  -> 201 auth_token for user",
                 "-> 200 2 boxes",
                 "(multipart: metadata and audio)",
                 "-> 200 1 message, the last one",
                 "-> 200 3 messages in the account",
                 "-> 206 100 bytes, starting RIFF",
                 "-> 200 ZIP holding 2 recordings",
                 "-> 200 box ",
                 "-> 404 bad_identifier",
                 "walk-through done"):
        assert line in out, out
    moved = re.search(r"-> 200 (\S+) is now (\S+) in box", out)
    assert moved and moved.group(1) != moved.group(2), out  # a move gives the message a new id


async def test_walkthrough_stops_at_the_first_unexpected_status(served: tuple[str, dict[str, str]]) -> None:
    url, env = served
    code, out, err = await run_script({**env, "KAZOO_VM_URL": url, "ACCOUNT_ID": "0" * 32, "API_KEY": "wrong"})
    assert code == 1
    assert out.rstrip().endswith("PUT /api_auth"), out
    assert "-> 401, expected 201" in err, err
