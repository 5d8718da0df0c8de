"""Settings, read once from ``KAZOO_VM_*`` environment variables (see README.rst)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCHEMAS_DIR = PROJECT_ROOT / "schemas"


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"{name} must be at least {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, not {raw!r}") from None


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated addresses or networks (``10.0.0.1``, ``10.0.0.0/8``), checked."""
    import ipaddress

    found = []
    for item in (env.get(name) or "").split(","):
        if item.strip():
            try:
                found.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                raise SystemExit(f"{name}: {item.strip()!r} is not an address or a network") from None
    return tuple(found)


@dataclass(frozen=True)
class Config:
    couch_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = PROJECT_ROOT / ".kazoo_vm_data"
    retention_days: int = 93
    jwt_secret: str | None = None
    token_lifetime: int = 3600
    couch_timeout: float = 30.0
    couch_connect_timeout: float = 3.0
    cache_ttl: float = 3.0
    max_upload_size: int = 8_000_000
    page_size: int = 50
    max_range: int = 2_682_000
    default_privacy_number: str = "anonymous"
    smtp_url: str | None = None
    smtp_from: str = "voicemail@kazoo-vm.local"
    notify_poll: float = 2.0
    notify_retry: float = 5.0
    notify_attempts: int = 10
    notify_lease: float = 120.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 75.0
    send_timeout: float = 60.0
    max_zip_size: int = 1_000_000_000
    move_recovery: bool = True
    amqp_url: str | None = None
    webhooks: bool = True
    webhook_connect_timeout: float = 10.0
    webhook_request_timeout: float = 10.0
    webhook_retry_pause: float = 2.0
    webhook_backoff: float = 5.0
    webhook_poll: float = 2.0
    webhook_lease: float = 60.0
    auth_failures: int = 5
    auth_window: float = 900.0
    auth_backoff_max: float = 60.0
    trusted_proxies: tuple[str, ...] = ()

    @property
    def retention_seconds(self) -> int:
        """Kazoo's window: ``days * 86400 + 3600``."""
        return self.retention_days * 86400 + 3600

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        return cls(
            couch_url=env.get("KAZOO_VM_COUCH_URL") or None,
            host=env.get("KAZOO_VM_HOST") or "127.0.0.1",
            port=_int(env, "KAZOO_VM_PORT", 8000),
            data_dir=Path(env.get("KAZOO_VM_DATA_DIR") or PROJECT_ROOT / ".kazoo_vm_data"),
            retention_days=_int(env, "KAZOO_VM_RETENTION_DAYS", 93),
            jwt_secret=env.get("KAZOO_VM_JWT_SECRET") or None,
            token_lifetime=_int(env, "KAZOO_VM_TOKEN_LIFETIME", 3600),
            couch_timeout=_float(env, "KAZOO_VM_COUCH_TIMEOUT", 30.0),
            couch_connect_timeout=_float(env, "KAZOO_VM_COUCH_CONNECT_TIMEOUT", 3.0),
            cache_ttl=_float(env, "KAZOO_VM_CACHE_TTL", 3.0),
            smtp_url=env.get("KAZOO_VM_SMTP_URL") or None,
            smtp_from=env.get("KAZOO_VM_SMTP_FROM") or "voicemail@kazoo-vm.local",
            notify_poll=_float(env, "KAZOO_VM_NOTIFY_POLL", 2.0),
            notify_retry=_float(env, "KAZOO_VM_NOTIFY_RETRY", 5.0),
            notify_attempts=_int(env, "KAZOO_VM_NOTIFY_ATTEMPTS", 10),
            notify_lease=_float(env, "KAZOO_VM_NOTIFY_LEASE", 120.0),
            body_timeout=_float(env, "KAZOO_VM_BODY_TIMEOUT", 30.0),
            keepalive_timeout=_float(env, "KAZOO_VM_KEEPALIVE_TIMEOUT", 75.0),
            send_timeout=_float(env, "KAZOO_VM_SEND_TIMEOUT", 60.0),
            max_zip_size=_int(env, "KAZOO_VM_MAX_ZIP_SIZE", 1_000_000_000),
            move_recovery=(env.get("KAZOO_VM_MOVE_RECOVERY") or "true").lower() not in ("0", "false", "no"),
            amqp_url=env.get("KAZOO_VM_AMQP_URL") or None,
            webhooks=(env.get("KAZOO_VM_WEBHOOKS") or "true").lower() not in ("0", "false", "no"),
            webhook_connect_timeout=_float(env, "KAZOO_VM_WEBHOOK_CONNECT_TIMEOUT", 10.0),
            webhook_request_timeout=_float(env, "KAZOO_VM_WEBHOOK_REQUEST_TIMEOUT", 10.0),
            webhook_retry_pause=_float(env, "KAZOO_VM_WEBHOOK_RETRY_PAUSE", 2.0),
            webhook_backoff=_float(env, "KAZOO_VM_WEBHOOK_BACKOFF", 5.0),
            webhook_poll=_float(env, "KAZOO_VM_WEBHOOK_POLL", 2.0),
            webhook_lease=_float(env, "KAZOO_VM_WEBHOOK_LEASE", 60.0),
            auth_failures=_int(env, "KAZOO_VM_AUTH_FAILURES", 5, minimum=0),
            auth_window=_float(env, "KAZOO_VM_AUTH_WINDOW", 900.0),
            auth_backoff_max=_float(env, "KAZOO_VM_AUTH_BACKOFF_MAX", 60.0),
            trusted_proxies=_networks(env, "KAZOO_VM_TRUSTED_PROXIES"),
        )
