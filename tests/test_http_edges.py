"""What happens at the HTTP edge, around the handlers: clients that go away in the middle
of a download, and requests aiohttp's parser refuses before any handler runs."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import socket
import struct
import zipfile
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from conftest import Api, assert_error

from kazoo_vm.app import create_app, server_options
from kazoo_vm.config import Config
from kazoo_vm.embedded_store import free_port

LARGE = bytes(range(251)) * 24_000  # 6 MB: many chunks, more than socket buffers hold


@contextlib.asynccontextmanager
async def _serving(config: Config, couch_url: str) -> AsyncIterator[tuple[str, int]]:
    runner = web.AppRunner(create_app(config, couch_url), access_log=None, **server_options(config))
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield "127.0.0.1", port
    finally:
        await runner.cleanup()


@pytest.fixture
async def served(config: Config, couch_url: str) -> AsyncIterator[tuple[str, int]]:
    """(host, port) of the API served as ``kazoo_vm serve`` serves it: aiohttp's test
    server cancels a handler whose client went away, the real one lets it run on."""
    async with _serving(config, couch_url) as address:
        yield address


async def _message_with_audio(api: Api, box: str, audio: bytes = LARGE) -> str:
    reply = await api.call("PUT", f"/vmboxes/{box}/messages", body=audio, headers={"Content-Type": "audio/mpeg"})
    assert reply.status == 201, reply.body
    return str(reply.data["media_id"])


async def _abort_after_first_bytes(served: tuple[str, int], head: str, body: bytes = b"") -> None:
    """Send a request, read the start of the answer, then reset the connection (RST), as
    a browser that seeks in a recording does."""
    reader, writer = await _small_window_connection(served)
    writer.write(head.encode() + b"\r\n" + body)
    await writer.drain()
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    await reader.readexactly(1024)
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _small_window_connection(served: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection whose receive buffer is small, so the server soon waits on its reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, served)
    return await asyncio.open_connection(sock=sock)


def _head(api: Api, method: str, path: str, request_id: str, **headers: str) -> str:
    lines = [f"{method} {api.url(path)} HTTP/1.1", "Host: kazoo-vm.test", f"X-Auth-Token: {api.token}",
             f"X-Request-ID: {request_id}", *(f"{name}: {value}" for name, value in headers.items())]
    return "".join(f"{line}\r\n" for line in lines)


async def _records_about(caplog: pytest.LogCaptureFixture, words: str) -> list[logging.LogRecord]:
    """The records (kazoo_vm's and aiohttp's) once one mentions ``words`` or a failure."""
    for _ in range(100):
        if any(words in record.getMessage() or record.levelno >= logging.ERROR for record in caplog.records):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # anything the same request logs after its first line
    return [record for record in caplog.records if record.name.startswith(("kazoo_vm", "aiohttp"))
            and record.name != "aiohttp.access"]


def _assert_one_line(records: list[logging.LogRecord], words: str) -> None:
    assert [(record.name, record.getMessage()) for record in records if record.exc_info] == []
    assert not any("unhandled error" in record.getMessage() for record in records)
    assert len([record for record in records if words in record.getMessage()]) == 1, \
        [record.getMessage() for record in records]


# issue 15.13
async def test_an_aborted_audio_download_is_one_log_line(api: Api, vmbox: dict[str, Any], served: tuple[str, int],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    message_id = await _message_with_audio(api, vmbox["id"])
    caplog.set_level(logging.INFO)
    await _abort_after_first_bytes(served, _head(api, "GET", f"/vmboxes/{vmbox['id']}/messages/{message_id}/raw",
                                              "abort-audio-1"))
    _assert_one_line(await _records_about(caplog, "abort-audio-1"), "abort-audio-1")


# issue 15.13
async def test_an_aborted_zip_download_is_one_log_line(api: Api, vmbox: dict[str, Any], served: tuple[str, int],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    message_id = await _message_with_audio(api, vmbox["id"])
    body = json.dumps({"data": {"messages": [message_id]}}).encode()
    caplog.set_level(logging.INFO)
    head = _head(api, "POST", f"/vmboxes/{vmbox['id']}/messages/raw", "abort-zip-1",
                 **{"Content-Type": "application/json", "Content-Length": str(len(body))})
    await _abort_after_first_bytes(served, head, body)
    _assert_one_line(await _records_about(caplog, "abort-zip-1"), "abort-zip-1")


# issue 15.13: a header kazoo_vm does not read is the client's fault, answered in the envelope
async def test_a_header_over_the_limit_is_a_json_400(api: Api) -> None:
    reply = await api.get("/vmboxes", headers={"X-Padding": "a" * 40 * 1024})
    data = assert_error(reply, 400, "bad_request")
    assert data == {"message": "request header too large", "header": "X-Padding", "target": 32 * 1024}


# issue 15.13: far beyond, aiohttp answers before any handler runs: one line, no traceback
async def test_a_header_the_parser_refuses_is_one_log_line(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    reply = await api.get("/vmboxes", headers={"X-Padding": "a" * 200 * 1024})
    assert reply.status == 400
    records = await _records_about(caplog, "request refused")
    assert [(record.name, record.getMessage()) for record in records if record.exc_info] == []
    assert len([record for record in records if "request refused" in record.getMessage()]) == 1, \
        [record.getMessage() for record in records]


# issue 15.10: an id asked twice is one member (``[M] * 1000`` asked for 1000 copies)
async def test_zip_of_an_id_given_twice_holds_it_once(api: Api, vmbox: dict[str, Any]) -> None:
    message_id = await _message_with_audio(api, vmbox["id"], b"ID3 once")
    reply = await api.call("POST", f"/vmboxes/{vmbox['id']}/messages/raw", data={"messages": [message_id] * 3})
    assert reply.status == 200, reply.body
    assert len(zipfile.ZipFile(io.BytesIO(reply.body)).namelist()) == 1


@pytest.fixture
async def served_impatiently(config: Config, couch_url: str) -> AsyncIterator[tuple[str, int]]:
    async with _serving(replace(config, send_timeout=0.5), couch_url) as address:
        yield address


# issue 15.10: a reader that stops reading is cut after KAZOO_VM_SEND_TIMEOUT
async def test_an_audio_reader_that_stops_reading_is_cut(api: Api, vmbox: dict[str, Any],
                                                         served_impatiently: tuple[str, int]) -> None:
    message_id = await _message_with_audio(api, vmbox["id"])
    reader, writer = await _small_window_connection(served_impatiently)
    writer.write(_head(api, "GET", f"/vmboxes/{vmbox['id']}/messages/{message_id}/raw", "stall-1").encode() + b"\r\n")
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(2)  # reads nothing for four times the timeout
    received = 0
    async with asyncio.timeout(10):
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                received += len(chunk)
    writer.close()
    assert received < len(LARGE)
