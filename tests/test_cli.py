"""The operator commands, run as an operator runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from kazoo_vm.config import PROJECT_ROOT
from kazoo_vm.embedded_store import free_port


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kazoo_vm", *args], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def cli_env(couch_url: str, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "KAZOO_VM_COUCH_URL": couch_url, "KAZOO_VM_DATA_DIR": str(tmp_path)}


def http(method: str, url: str, data: Any = None, token: str | None = None) -> tuple[int, Any]:
    body = None if data is None else json.dumps({"data": data}).encode()
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    if token:
        request.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_accounts_create_prints_id_api_key_and_realm(cli_env: dict[str, str]) -> None:
    result = run_cli(cli_env, "accounts", "create", "--name", "CLI Account", "--realm", "cli.example.com")
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert len(created["account_id"]) == 32
    assert created["api_key"]
    assert created["realm"] == "cli.example.com"


def test_accounts_create_with_unknown_parent_fails_cleanly(cli_env: dict[str, str]) -> None:
    result = run_cli(cli_env, "accounts", "create", "--name", "Orphan", "--parent", "f" * 32)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


def test_users_create_prints_user_id(cli_env: dict[str, str]) -> None:
    account = json.loads(run_cli(cli_env, "accounts", "create", "--name", "Users Account").stdout)
    result = run_cli(cli_env, "users", "create", "--account", account["account_id"], "--username", "ann",
                     "--password", "pw", "--email", "ann@example.com", "--first-name", "Ann", "--last-name", "Lee")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["user_id"]) == 32


def test_users_create_rejects_a_malformed_account_id(cli_env: dict[str, str]) -> None:
    result = run_cli(cli_env, "users", "create", "--account", "../x", "--username", "a", "--password", "b")
    assert result.returncode == 2


@pytest.mark.skipif(bool(os.environ.get("KAZOO_VM_COUCH_URL")), reason="the embedded store's first run")
def test_serve_on_embedded_store_prints_a_working_demo_api_key(tmp_path: Path) -> None:
    """README's first command, as a new user runs it: serve, read the printed key, get a
    token, list the demo account's boxes."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "KAZOO_VM_COUCH_URL"}
    env.update(KAZOO_VM_DATA_DIR=str(tmp_path), KAZOO_VM_PORT=str(port))
    process = subprocess.Popen([sys.executable, "-m", "kazoo_vm", "serve"], env=env, cwd=PROJECT_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 90
        while not any("/vmboxes" in line for line in lines) and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
        output = "".join(lines)
        api_key = output.split('"api_key":"')[1].split('"')[0]
        account_id = output.split("/v2/accounts/")[1].split("/")[0]
        base = f"http://127.0.0.1:{port}"
        status, body = http("PUT", f"{base}/v2/api_auth", {"api_key": api_key})
        assert status == 201
        status, listing = http("GET", f"{base}/v2/accounts/{account_id}/vmboxes", token=body["auth_token"])
        assert status == 200 and listing["data"] == []
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert not (tmp_path / "store.url").exists()
