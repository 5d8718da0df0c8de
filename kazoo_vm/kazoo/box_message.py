"""Pure rules for voicemail message documents (Kazoo's ``kzd_box_message``).

Building a new message, folders, the move/copy transform, the
download file name and retention enforcement — no I/O here.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import naming
from .documents import GREGORIAN_UNIX_OFFSET, as_dict, as_int

PVT_TYPE = "mailbox_message"
# The claim a move writes on the message it moves (kazoo_vm's, not Kazoo's): the id of
# the copy it writes. A message that carries one is on its way to another box.
MOVE_CLAIM = "pvt_moving"


def is_moving(doc: dict[str, Any]) -> bool:
    """Whether a move has claimed the message (see :mod:`kazoo_vm.storage.moves`)."""
    return bool(as_dict(doc.get(MOVE_CLAIM)).get("id"))
FOLDERS = ("new", "saved", "deleted")
DEFAULT_TIMEZONE = "America/Los_Angeles"
SUMMARY_KEYS = ("timestamp", "from", "to", "caller_id_number", "caller_id_name", "call_id", "folder", "length",
                "media_id")
PLACEHOLDER_LENGTH = 1  # Kazoo's ``length`` of a message created without one (ms)
MEASURED_LENGTH = "pvt_audio_length"  # the ``length`` kazoo_vm measured from the message's audio
RETENTION_MESSAGE = "this message is prior to retention policy, no update operation is permitted"
EXTENSIONS = {"audio/mp3": "mp3", "audio/mpeg": "mp3", "audio/mpeg3": "mp3", "audio/x-mpeg": "mp3",
              "audio/wav": "wav", "audio/x-wav": "wav", "audio/x-wave": "wav", "audio/wave": "wav",
              "audio/ogg": "oga", "audio/mp4": "mp4", "audio/x-m4a": "m4a", "audio/webm": "weba",
              "application/octet-stream": "bin"}
CONTENT_TYPES = {"mp3": "audio/mpeg", "wav": "audio/x-wav", "mp4": "audio/mp4", "oga": "audio/ogg",
                 "ogg": "audio/ogg", "m4a": "audio/mp4"}


def zone(name: Any) -> ZoneInfo | None:
    """The IANA zone ``name``; None for anything else (ZoneInfo refuses empty, absolute,
    escaping and overlong names by itself)."""
    if not isinstance(name, str):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def local_time(gregorian: int, tz_name: Any) -> tuple[datetime, bool]:
    """The moment in the zone (UTC when the zone is unknown) and whether it was known."""
    tz = zone(tz_name)
    moment = datetime.fromtimestamp(max(gregorian - GREGORIAN_UNIX_OFFSET, 0), tz=UTC)
    return (moment.astimezone(tz), True) if tz is not None else (moment, False)


def message_name(mailbox: Any, gregorian: int, tz_name: Any) -> str:
    """``mailbox 3001 message 2017-10-02 17:0:0`` (hours, minutes, seconds unpadded)."""
    moment, known = local_time(gregorian, tz_name)
    name = (f"mailbox {mailbox} message {moment.year:04d}-{moment.month:02d}-{moment.day:02d} "
            f"{moment.hour}:{moment.minute}:{moment.second}")
    return name if known else name + " UTC"


def message_id(gregorian: int, suffix: str | None = None) -> str:
    year, month = naming.year_month(gregorian)
    return f"{year:04d}{month:02d}-{suffix or secrets.token_hex(16)}"


def moved_id(now: int, source_id: str, destination_box: str) -> str:
    """The id a move (or a named copy request) gives a message: derived from what goes
    where, so a retry finds the copy already made instead of making another."""
    digest = hashlib.md5(f"{source_id}>{destination_box}".encode()).hexdigest()
    return message_id(now, digest)


def with_realm(value: str, realm: str) -> str:
    """kazoo_vm appends ``@realm`` only when the value has no ``@`` (Kazoo always does)."""
    return value if "@" in value else f"{value}@{realm}"


def split_address(value: str) -> tuple[str, str]:
    user, _, realm = value.partition("@")
    return user, realm


def box_mailbox(box: dict[str, Any]) -> str:
    """The box's mailbox number: Kazoo's schema requires one, but a box document made
    outside it may lack it ("")."""
    return str(box.get("mailbox") or "")


def new_message(*, box: dict[str, Any], request: dict[str, Any], realm: str, timezone_name: Any,
                privacy_number: str, now: int, named: str | None = None) -> dict[str, Any]:
    """A new ``mailbox_message`` document (no private account fields yet) from
    validated request metadata. ``named``: the client's own id for the request, from
    which the message id is derived (a resent request then meets the message it made)."""
    timestamp = as_int(request.get("timestamp")) or now
    new_id = message_id(timestamp, None if named is None else
                        hashlib.md5(f"{named}>{box['_id']}".encode()).hexdigest())
    caller_number = request.get("caller_id_number", privacy_number)
    from_value = with_realm(str(request.get("from") or caller_number), realm)
    mailbox = box_mailbox(box)
    to_value = with_realm(str(request.get("to") or mailbox), realm)
    from_user, from_realm = split_address(from_value)
    to_user, to_realm = split_address(to_value)
    metadata = {
        "media_id": new_id,
        "call_id": request.get("call_id") or secrets.token_hex(12),
        "caller_id_number": caller_number,
        "caller_id_name": request.get("caller_id_name", caller_number),
        "from": from_value, "from_user": from_user, "from_realm": from_realm,
        "to": to_value, "to_user": to_user, "to_realm": to_realm,
        "length": request.get("length", PLACEHOLDER_LENGTH),
        "timestamp": timestamp,
        "folder": request.get("folder", "new"),
    }
    return {
        "_id": new_id,
        "name": message_name(mailbox, timestamp, timezone_name),
        "description": "voicemail message with media",
        "source_type": "voicemail",
        "source_id": box["_id"],
        "media_source": "recording",
        "streamable": True,
        "utc_seconds": timestamp,
        "metadata": metadata,
    }  # pvt_type with the other private fields: the save stamps them


def with_audio_length(doc: dict[str, Any], measured: int | None) -> dict[str, Any]:
    """``doc`` with new audio that plays ``measured`` ms (None: unknown). A length of the
    message's own (the client's, or Kazoo's recorder's) is kept; otherwise (no length,
    the placeholder, or the one measured from the audio replaced) ``metadata.length``
    becomes ``measured``, or the placeholder when the new audio cannot be measured."""
    metadata = as_dict(doc.get("metadata"))
    current = metadata.get("length")
    before = doc.get(MEASURED_LENGTH)
    if current is not None and current != PLACEHOLDER_LENGTH and (before is None or current != before):
        return doc
    changed = {key: value for key, value in doc.items() if key != MEASURED_LENGTH}
    if measured is not None:
        changed[MEASURED_LENGTH] = measured
    elif before is None:
        return doc
    changed["metadata"] = {**metadata, "length": measured or PLACEHOLDER_LENGTH}
    return changed


def metadata_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The metadata a read returns: stored metadata, plus the top-level transcription."""
    metadata = dict(as_dict(doc.get("metadata")))
    if "transcription" not in metadata and isinstance(doc.get("transcription"), dict):
        metadata["transcription"] = doc["transcription"]
    return metadata


def message_time(doc: dict[str, Any]) -> int:
    """Kazoo's age of a message: first of utc_seconds, timestamp, metadata.timestamp,
    pvt_created that is set."""
    metadata = as_dict(doc.get("metadata"))
    for value in (doc.get("utc_seconds"), doc.get("timestamp"), metadata.get("timestamp"), doc.get("pvt_created")):
        if isinstance(value, int | float) and not isinstance(value, bool) and value:
            return int(value)
    return 0


def is_prior_to_retention(doc: dict[str, Any], cutoff: int) -> bool:
    stamp = message_time(doc)
    return bool(stamp) and stamp < cutoff


def enforce_retention(metadata: dict[str, Any]) -> dict[str, Any]:
    return {**metadata, "folder": "deleted", "retention": "enforced", "retention_message": RETENTION_MESSAGE}


def apply_folder(doc: dict[str, Any], folder: str, *, soft_delete: bool, now: int) -> dict[str, Any]:
    """A copy of ``doc`` in ``folder`` (``soft_delete`` also hides it from views); ``doc``
    and the values it shares with the copy are left as they were."""
    changed = {**doc, "metadata": {**as_dict(doc.get("metadata")), "folder": folder}, "pvt_modified": now}
    if soft_delete:
        changed["pvt_deleted"] = True
    return changed


def transferred(doc: dict[str, Any], *, new_id: str, destination: dict[str, Any], realm: str,
                timezone_name: Any, now: int) -> dict[str, Any]:
    """The copy of ``doc`` that a move or copy writes into ``destination`` (E10); ``doc``
    and the values it shares with the copy are left as they were."""
    moved = {key: value for key, value in doc.items() if key not in ("_rev", "_attachments", MOVE_CLAIM)}
    moved["_id"] = new_id
    moved["source_id"] = destination["_id"]
    mailbox = box_mailbox(destination)
    moved["name"] = message_name(mailbox, now, timezone_name)
    history = moved.get("history")
    moved["history"] = [*(history if isinstance(history, list) else []), doc.get("source_id")]
    to_value = with_realm(mailbox, realm)
    to_user, to_realm = split_address(to_value)
    moved["metadata"] = {**as_dict(moved.get("metadata")), "media_id": new_id, "folder": "new", "timestamp": now,
                         "to": to_value, "to_user": to_user, "to_realm": to_realm}
    moved["utc_seconds"] = now
    # pvt_created, pvt_modified: the save stamps them (the copy has no _rev); its
    # pvt_account_db is the MODB it is written to. A deleted message is never transferred.
    return moved


def attachment_name(filename: Any, content_type: str, now: int) -> str:
    """Kazoo's upload name: ``filename`` or ``uploaded_file_<now>``, extension from the
    content type when missing, whitespace removed."""
    name = filename if isinstance(filename, str) and filename.strip() else f"uploaded_file_{now}"
    name = "".join(name.split()).replace("/", "_")[:200]
    if "." not in name:
        name = f"{name}.{EXTENSIONS.get(content_type.lower(), '')}"
    return name


def single_attachment(doc: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(name, stub) of the message's audio: its first ``_attachments`` entry."""
    attachments = doc.get("_attachments")  # CouchDB keeps only an object of objects there
    if not attachments:
        return None
    name = sorted(attachments)[0]
    return name, attachments[name]


def download_name(doc: dict[str, Any], attachment: str, tz_name: Any) -> str:
    """``<caller id number or unknown>_<YYYY-MM-DD>_<HH:MM:SS>.<ext>`` in the box zone."""
    metadata = metadata_of(doc)
    caller = metadata.get("caller_id_number") or "unknown"
    caller = "".join(ch for ch in str(caller) if ch.isalnum() or ch in "+-_.") or "unknown"
    timestamp = as_int(metadata.get("timestamp")) or message_time(doc)
    moment, _known = local_time(timestamp, tz_name)
    ext = attachment.rsplit(".", 1)[1] if "." in attachment else ""
    name = f"{caller}_{moment:%Y-%m-%d}_{moment:%H:%M:%S}"
    return f"{name}.{ext}" if ext else name


def is_in_box(doc: dict[str, Any], box_id: str) -> bool:
    """The message is one of the box's (one without ``source_id`` belongs to every box,
    as in Kazoo) and was not deleted (``pvt_deleted``): a deleted message is gone for
    every request about it, whatever its folder says."""
    return doc.get("source_id", box_id) == box_id and not doc.get("pvt_deleted")
