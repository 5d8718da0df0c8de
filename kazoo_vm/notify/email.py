"""The ``voicemail_to_email`` message, from the template files in ``kazoo_vm/templates``."""

from __future__ import annotations

import html
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from string import Template
from typing import Any

from ..kazoo import box_message
from ..storage.messages import Audio

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
NAME = "voicemail_to_email"


def _template(suffix: str) -> Template:
    return Template((TEMPLATES / f"{NAME}.{suffix}").read_text())


def duration(milliseconds: Any) -> str:
    """``length`` (ms) as m:ss."""
    seconds = int(milliseconds) // 1000 if isinstance(milliseconds, int | float) else 0
    return f"{seconds // 60}:{seconds % 60:02d}"


def fields(box: dict[str, Any], doc: dict[str, Any], tz_name: str, attached: bool) -> dict[str, str]:
    metadata = box_message.metadata_of(doc)
    moment, known = box_message.local_time(box_message.message_time(doc), tz_name)
    return {
        "box_name": str(box.get("name", "")),
        "mailbox": str(box.get("mailbox", "")),
        "caller_id_name": str(metadata.get("caller_id_name") or "unknown"),
        "caller_id_number": str(metadata.get("caller_id_number") or "unknown"),
        "date": f"{moment:%Y-%m-%d}",
        "time": f"{moment:%H:%M:%S}",
        "timezone": tz_name if known else "UTC",
        "length": duration(metadata.get("length")),
        "attachment_note": "The recording is attached." if attached else "Listen to it in your voicemail box.",
    }


def build(*, sender: str, recipients: list[str], box: dict[str, Any], doc: dict[str, Any], tz_name: str,
          audio: Audio | None) -> EmailMessage:
    """The email for one message; ``audio`` is attached under the raw endpoint's
    download file name when given."""
    values = fields(box, doc, tz_name, audio is not None)
    message = EmailMessage()
    message["Subject"] = _template("subject").substitute(values).strip()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(_template("txt").substitute(values))
    message.add_alternative(_template("html").substitute({k: html.escape(v) for k, v in values.items()}),
                            subtype="html")
    if audio is not None:
        maintype, _, subtype = audio.content_type.partition("/")
        message.add_attachment(audio.data, maintype=maintype or "application", subtype=subtype or "octet-stream",
                               filename=box_message.download_name(doc, audio.name, tz_name))
    return message
