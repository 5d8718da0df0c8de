"""The SMTP relay of ``KAZOO_VM_SMTP_URL`` (``smtp://`` or ``smtps://``, optional user and
password; STARTTLS is used when the relay offers it), through aiosmtplib."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import aiosmtplib


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    implicit_tls: bool
    username: str | None
    password: str | None
    timeout: float = 30.0

    @classmethod
    def from_url(cls, url: str, timeout: float = 30.0) -> Relay:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError("KAZOO_VM_SMTP_URL must start with smtp:// or smtps://")
        implicit = parts.scheme == "smtps"
        return cls(host=parts.hostname or "localhost", port=parts.port or (465 if implicit else 25),
                   implicit_tls=implicit, username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password else None, timeout=timeout)

    async def send(self, message: EmailMessage, sender: str, recipients: list[str]) -> None:
        """Hand the message to the relay; raises ``aiosmtplib.SMTPException`` or
        ``OSError`` when it does not accept it."""
        await aiosmtplib.send(message, sender=sender, recipients=recipients, hostname=self.host, port=self.port,
                              username=self.username, password=self.password, use_tls=self.implicit_tls,
                              start_tls=None if not self.implicit_tls else False, timeout=self.timeout)
