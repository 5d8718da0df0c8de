"""A message's ``length`` (ms) measured from its audio (issue 15 point 9): a message
created with audio and no ``length`` kept Kazoo's placeholder 1, which Monster UI shows
as 00:00. The audio is made here: WAV with :mod:`wave`, MP3 as MPEG-1 Layer III frames
with a fixed header and a silent payload, Ogg Opus and Ogg Vorbis as hand-built pages
(header packets, then one page whose granule position ends the stream), FLAC as its
STREAMINFO block and M4A as the atoms that hold the sound track's duration."""

from __future__ import annotations

import io
import json
import struct
import wave
from typing import Any

import pytest
from conftest import Api, build_multipart

from kazoo_vm.kazoo import audio_length, naming
from kazoo_vm.kazoo.audio_length import MAX_MS, MAX_OPERATIONS, duration_ms
from kazoo_vm.services import Services

# MPEG-1 Layer III, 128 kbit/s, 48 kHz, mono, no CRC, no padding: 144 * 128000 / 48000 = 384
# bytes a frame, 1152 samples = 24 ms a frame.
MP3_HEADER = b"\xff\xfb\x94\xc0"
MP3_FRAME = MP3_HEADER + bytes(380)
GARBAGE = b"ID3\x04\x00\x00" + bytes(range(256)) * 3  # what the other message tests upload


def wav(seconds: float, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\x00\x00" * round(seconds * rate))
    return out.getvalue()


def mp3(frames: int) -> bytes:
    return MP3_FRAME * frames


def mp3_with_xing(counted: int, frames: int) -> bytes:
    """A VBR file as LAME writes it: a first frame whose Xing header counts ``counted``
    frames (mono side information is 17 bytes), then ``frames`` frames."""
    xing = bytes(17) + b"Xing" + struct.pack(">II", 1, counted)
    return MP3_HEADER + xing + bytes(380 - len(xing)) + mp3(frames)


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = (crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


CRC_TABLE = _crc_table()


def ogg_crc(data: bytes) -> int:
    """The Ogg page checksum (CRC-32, polynomial 0x04C11DB7, not reflected, from 0)."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ CRC_TABLE[((crc >> 24) ^ byte) & 0xFF]
    return crc


def ogg_page(packets: list[bytes], *, sequence: int, granule: int, flags: int = 0) -> bytes:
    """One Ogg page (flags 2: first of the stream, 4: last) holding whole ``packets``."""
    lacing = bytearray()
    for packet in packets:
        lacing += b"\xff" * (len(packet) // 255) + bytes([len(packet) % 255])
    page = (b"OggS" + bytes([0, flags]) + struct.pack("<qIII", granule, 0x4B564D, sequence, 0)
            + bytes([len(lacing)]) + lacing + b"".join(packets))
    return page[:22] + struct.pack("<I", ogg_crc(page)) + page[26:]


def ogg_opus(seconds: float, pre_skip: int = 312) -> bytes:
    """Opus counts 48 kHz samples, the first ``pre_skip`` of them not played."""
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, pre_skip, 8000, 0, 0)
    tags = b"OpusTags" + struct.pack("<I", 4) + b"test" + struct.pack("<I", 0)
    return (ogg_page([head], sequence=0, granule=0, flags=2) + ogg_page([tags], sequence=1, granule=0)
            + ogg_page([b"\xf8" + bytes(20)] * 3, sequence=2, granule=pre_skip + round(seconds * 48000), flags=4))


def ogg_vorbis(seconds: float, rate: int = 8000) -> bytes:
    ident = b"\x01vorbis" + struct.pack("<IBIiiiBB", 0, 1, rate, 0, 16000, 0, 0xB8, 1)
    comment = b"\x03vorbis" + struct.pack("<I", 4) + b"test" + struct.pack("<I", 0) + b"\x01"
    setup = b"\x05vorbis" + bytes(30)
    return (ogg_page([ident], sequence=0, granule=0, flags=2) + ogg_page([comment, setup], sequence=1, granule=0)
            + ogg_page([bytes(20)] * 3, sequence=2, granule=round(seconds * rate), flags=4))


def flac(seconds: float, rate: int = 8000) -> bytes:
    """``fLaC`` and its one (last) metadata block, STREAMINFO: 16-bit mono, no frames."""
    samples = round(seconds * rate)
    packed = (rate << 44) | (0 << 41) | (15 << 36) | samples  # rate, channels - 1, bits - 1, samples
    info = struct.pack(">HH", 4096, 4096) + bytes(6) + packed.to_bytes(8, "big") + bytes(16)
    return b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info


def atom(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def m4a(seconds: float, timescale: int = 8000) -> bytes:
    """``ftyp``, then ``moov`` with one ``trak`` whose ``mdia`` has the track's ``mdhd``
    (time scale and duration) and an ``hdlr`` that makes it sound."""
    mdhd = atom(b"mdhd", bytes(4) + struct.pack(">IIII", 0, 0, timescale, round(seconds * timescale)) + bytes(4))
    hdlr = atom(b"hdlr", bytes(8) + b"soun" + bytes(12) + b"\x00")
    return atom(b"ftyp", b"M4A " + bytes(4) + b"M4A isom") + atom(b"moov", atom(b"trak", atom(b"mdia", mdhd + hdlr)))


# -- HTTP helpers --------------------------------------------------------------------


async def create_with(api: Api, box: str, audio: bytes, content_type: str, **metadata: Any) -> dict[str, Any]:
    """A message made by one multipart request (JSON part, audio part); its metadata."""
    body, multipart_type = build_multipart([
        ({"Content-Type": "application/json"}, json.dumps({"data": metadata}).encode()),
        ({"Content-Disposition": 'form-data; name="file"; filename="voice"', "Content-Type": content_type}, audio)])
    reply = await api.call("PUT", f"/vmboxes/{box}/messages", body=body, headers={"Content-Type": multipart_type})
    assert reply.status == 201, reply.body
    return dict(reply.data)


async def create_json(api: Api, box: str, **metadata: Any) -> dict[str, Any]:
    reply = await api.put(f"/vmboxes/{box}/messages", metadata)
    assert reply.status == 201, reply.body
    return dict(reply.data)


async def upload(api: Api, box: str, message_id: str, audio: bytes, content_type: str) -> dict[str, Any]:
    reply = await api.call("PUT", f"/vmboxes/{box}/messages/{message_id}/raw", body=audio,
                           headers={"Content-Type": content_type})
    assert reply.status == 201, reply.body
    return dict(reply.data)


async def read_length(api: Api, box: str, message_id: str) -> Any:
    reply = await api.get(f"/vmboxes/{box}/messages/{message_id}")
    assert reply.status == 200, reply.body
    return reply.data["length"]


# -- the create -----------------------------------------------------------------------


async def test_wav_of_one_and_a_half_seconds_is_1500_ms(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create_with(api, vmbox["id"], wav(1.5), "audio/x-wav", caller_id_number="6001")
    assert created["length"] == 1500
    assert await read_length(api, vmbox["id"], created["media_id"]) == 1500


async def test_mp3_of_125_frames_is_3000_ms(api: Api, vmbox: dict[str, Any]) -> None:
    assert (await create_with(api, vmbox["id"], mp3(125), "audio/mpeg"))["length"] == 3000


async def test_ogg_opus_is_measured_without_its_pre_skip(api: Api, vmbox: dict[str, Any]) -> None:
    assert (await create_with(api, vmbox["id"], ogg_opus(2.5), "audio/ogg"))["length"] == 2500


async def test_ogg_vorbis_is_measured(api: Api, vmbox: dict[str, Any]) -> None:
    assert (await create_with(api, vmbox["id"], ogg_vorbis(4.25), "audio/ogg"))["length"] == 4250


async def test_m4a_is_measured(api: Api, vmbox: dict[str, Any]) -> None:
    assert (await create_with(api, vmbox["id"], m4a(2.5), "audio/mp4"))["length"] == 2500


async def test_raw_audio_body_create_is_measured(api: Api, vmbox: dict[str, Any]) -> None:
    reply = await api.call("PUT", f"/vmboxes/{vmbox['id']}/messages", body=wav(2),
                           headers={"Content-Type": "audio/wav"})
    assert reply.status == 201, reply.body
    assert reply.data["length"] == 2000


async def test_length_the_client_gives_wins(api: Api, vmbox: dict[str, Any]) -> None:
    assert (await create_with(api, vmbox["id"], wav(1.5), "audio/x-wav", length=4200))["length"] == 4200


async def test_length_of_1_the_client_gives_wins_at_create(api: Api, vmbox: dict[str, Any]) -> None:
    assert (await create_with(api, vmbox["id"], wav(1.5), "audio/x-wav", length=1))["length"] == 1


async def test_garbage_labelled_mpeg_is_stored_with_the_placeholder_length(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create_with(api, vmbox["id"], GARBAGE, "audio/mpeg")
    assert created["length"] == 1
    audio = await api.get(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw")
    assert audio.status == 200 and audio.body == GARBAGE


async def test_json_create_without_audio_keeps_the_placeholder_length(api: Api, vmbox: dict[str, Any]) -> None:
    assert (await create_json(api, vmbox["id"]))["length"] == 1


async def test_listing_shows_the_measured_length(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create_with(api, vmbox["id"], mp3(50), "audio/mpeg")
    reply = await api.get(f"/vmboxes/{vmbox['id']}/messages", params={"paginate": "false"})
    assert reply.status == 200, reply.body
    assert [(row["media_id"], row["length"]) for row in reply.data] == [(created["media_id"], 1200)]


async def test_account_listing_shows_the_measured_length(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create_with(api, vmbox["id"], wav(0.75), "audio/wav")
    reply = await api.get("/vmboxes/messages", params={"paginate": "false"})
    assert reply.status == 200, reply.body
    assert reply.data == [{vmbox["id"]: {**{key: created[key] for key in reply.data[0][vmbox["id"]]},
                                         "length": 750}}]


# -- uploads onto a message -----------------------------------------------------------


async def test_raw_upload_onto_a_message_without_length_sets_it(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create_json(api, vmbox["id"], caller_id_number="6001")
    answered = await upload(api, vmbox["id"], created["media_id"], wav(3.2), "audio/x-wav")
    assert answered["length"] == 3200
    assert await read_length(api, vmbox["id"], created["media_id"]) == 3200


async def test_multipart_upload_onto_a_message_sets_the_length(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create_json(api, vmbox["id"])
    body, content_type = build_multipart([({"Content-Type": "audio/ogg"}, ogg_opus(1.02))])
    reply = await api.call("PUT", f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}/raw", body=body,
                           headers={"Content-Type": content_type})
    assert reply.status == 201, reply.body
    assert reply.data["length"] == 1020


async def test_raw_upload_keeps_the_length_the_client_gave(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create_json(api, vmbox["id"], length=4200)
    assert (await upload(api, vmbox["id"], created["media_id"], wav(1.5), "audio/x-wav"))["length"] == 4200


async def test_new_audio_replaces_the_length_measured_from_the_old(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create_with(api, vmbox["id"], wav(1.5), "audio/x-wav")
    assert (await upload(api, vmbox["id"], created["media_id"], mp3(125), "audio/mpeg"))["length"] == 3000
    assert await read_length(api, vmbox["id"], created["media_id"]) == 3000


async def test_new_audio_keeps_a_length_set_since_the_last_measure(api: Api, vmbox: dict[str, Any],
                                                                   services: Services) -> None:
    """A length that is not the one kazoo_vm measured (Kazoo's recorder wrote it since)
    is the message's own: new audio does not replace it."""
    created = await create_with(api, vmbox["id"], wav(1.5), "audio/x-wav")
    db = naming.modb_of_message(api.account_id, created["media_id"])
    assert db is not None
    doc = await services.store.couch.get_doc(db, created["media_id"])
    assert doc["pvt_audio_length"] == 1500
    doc["metadata"]["length"] = 4321
    await services.store.couch.put_doc(db, doc)
    assert (await upload(api, vmbox["id"], created["media_id"], mp3(125), "audio/mpeg"))["length"] == 4321


async def test_unmeasurable_new_audio_puts_back_the_placeholder(api: Api, vmbox: dict[str, Any],
                                                               services: Services) -> None:
    created = await create_with(api, vmbox["id"], wav(1.5), "audio/x-wav")
    assert (await upload(api, vmbox["id"], created["media_id"], GARBAGE, "audio/mpeg"))["length"] == 1
    db = naming.modb_of_message(api.account_id, created["media_id"])
    assert db is not None
    assert "pvt_audio_length" not in await services.store.couch.get_doc(db, created["media_id"])


async def test_unmeasurable_upload_leaves_a_placeholder_length_alone(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create_json(api, vmbox["id"])
    assert (await upload(api, vmbox["id"], created["media_id"], GARBAGE, "audio/mpeg"))["length"] == 1


async def test_a_copy_keeps_the_measured_length(api: Api, vmbox: dict[str, Any]) -> None:
    created = await create_with(api, vmbox["id"], wav(1.5), "audio/x-wav")
    other = await api.put("/vmboxes", {"name": "Other", "mailbox": "3001"})
    assert other.status == 201, other.body
    reply = await api.post(f"/vmboxes/{vmbox['id']}/messages/{created['media_id']}",
                           {"source_id": [other.data["id"]]})
    assert reply.status == 200, reply.body
    (copy_id,) = reply.data["succeeded"]
    assert await read_length(api, other.data["id"], copy_id) == 1500


# -- duration_ms itself ---------------------------------------------------------------


def test_format_is_told_by_the_bytes_not_the_content_type() -> None:
    assert duration_ms(wav(1.5), "audio/mpeg") == 1500
    assert duration_ms(mp3(125), "application/octet-stream") == 3000
    assert duration_ms(ogg_vorbis(2), "audio/mpeg") == 2000


def test_mp3_without_a_sync_at_the_start_is_read_only_when_labelled_mpeg() -> None:
    late = bytes(100) + mp3(125)
    assert duration_ms(late, "audio/mpeg") == 3000
    assert duration_ms(late, "application/octet-stream") is None


def test_mp3_vbr_header_counts_the_frames() -> None:
    assert duration_ms(mp3_with_xing(250, 10), "audio/mpeg") == 6000


def test_flac_is_measured() -> None:
    assert duration_ms(flac(2.5), "audio/flac") == 2500


def test_fewer_than_four_mp3_frames_are_not_believed() -> None:
    assert duration_ms(mp3(3), "audio/mpeg") is None
    assert duration_ms(mp3(4), "audio/mpeg") == 96


def test_empty_truncated_and_garbage_audio_is_none() -> None:
    for data in (b"", GARBAGE, wav(1.5)[:30], MP3_FRAME[:100], ogg_opus(2)[:40], b"OggS" + bytes(100),
                 b"\x00\x00\x00\x20ftypM4A " + bytes(100), b"fLaC" + bytes(50), b"RIFF" + bytes(200)):
        assert duration_ms(data, "audio/mpeg") is None, data[:16]


def test_silence_of_no_duration_is_none() -> None:
    assert duration_ms(wav(0), "audio/wav") is None


def test_durations_past_a_day_are_not_believed() -> None:
    assert duration_ms(mp3_with_xing(2**32 - 1, 10), "audio/mpeg") is None
    assert duration_ms(ogg_opus(MAX_MS / 1000 + 1), "audio/ogg") is None
    assert duration_ms(ogg_opus(MAX_MS / 1000 - 1), "audio/ogg") == MAX_MS - 1000


def wav_behind_chunks(chunks: int, seconds: float) -> bytes:
    """A WAV whose ``fmt`` and ``data`` chunks come after ``chunks`` empty ``junk`` ones."""
    data = b"WAVE" + b"junk\x00\x00\x00\x00" * chunks + wav(seconds)[12:]
    return b"RIFF" + struct.pack("<I", len(data)) + data


def test_a_parse_that_reads_without_end_is_given_up() -> None:
    """Hundreds of thousands of empty RIFF chunks (or Ogg pages, MP4 atoms) held mutagen
    for seconds: the parse stops after MAX_OPERATIONS reads, seeks and tells."""
    assert duration_ms(wav_behind_chunks(100, 1.5), "audio/wav") == 1500
    assert duration_ms(wav_behind_chunks(MAX_OPERATIONS, 1.5), "audio/wav") is None


def test_the_operation_budget_is_what_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio_length, "MAX_OPERATIONS", 10**9)
    assert duration_ms(wav_behind_chunks(MAX_OPERATIONS, 1.5), "audio/wav") == 1500
