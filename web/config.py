"""Settings of a web node: ``WebSettings`` built from the shared sub-models (``PIXELFOX_*`` env)."""

from __future__ import annotations

import json

from pydantic import Field, field_validator
from yarl import URL

from pixelfox.config import HttpServerSettings, LimitsSettings, NodeSettings, RedisSettings, proxy_networks
from pixelfox.signing import UrlSigningSettings

REGISTRATIONS_PER_HOUR = 10  # per client address (POST /register); the default of register_per_hour


class WebSettings(NodeSettings):
    """Everything ``python -m web`` reads; loaded once in ``__main__`` and passed down as an AppKey.

    Env: ``PIXELFOX_NODE_ID``, ``PIXELFOX_CLUSTER__MANAGER``, ``PIXELFOX_CLUSTER__SECRET``,
    ``PIXELFOX_HTTP__HOST``/``__PORT``/``__PUBLIC_URL``, ``PIXELFOX_REDIS__URL``,
    ``PIXELFOX_METRICS_PORT``, ``PIXELFOX_COOKIE_SECURE``, ``PIXELFOX_SESSION_MAX_AGE_S``,
    ``PIXELFOX_SITE_NAME``, ``PIXELFOX_UPLOAD_WAIT_S``, ``PIXELFOX_UPLOAD_STALL_S``, ``PIXELFOX_BODY_IDLE_S``,
    ``PIXELFOX_BODIES_PER_CALLER``, ``PIXELFOX_ALLOW_ANONYMOUS``,
    ``PIXELFOX_PAGE_CACHE_S``,
    ``PIXELFOX_REGISTER_PER_HOUR``, ``PIXELFOX_TRUSTED_PROXIES``,
    ``PIXELFOX_LIMITS__MAX_UPLOAD_BYTES``, ``PIXELFOX_URL_SIGNING__*`` (as on the manager: the web
    node signs Download links)...
    """

    node_id: str = "web1"
    http: HttpServerSettings = HttpServerSettings()
    redis: RedisSettings = RedisSettings()
    limits: LimitsSettings = LimitsSettings()
    url_signing: UrlSigningSettings = UrlSigningSettings()
    cookie_secure: bool = Field(False, description="mark the session cookie Secure (set behind https)")
    session_max_age_s: int = Field(14 * 24 * 3600, gt=0, description="absolute session lifetime")
    site_name: str = "PixelFox"
    upload_wait_s: float = Field(30.0, ge=0, description="how long POST /api/v1/images waits for ready")
    upload_stall_s: float = Field(20.0, gt=0, description=(
        "seconds the upload page waits for any progress of a resumable upload before it takes its upload node "
        "to have stopped answering (frozen: its connection open, nothing read), aborts and sends the rest again, "
        "to another upload node after a second stall"))
    body_idle_s: float = Field(60.0, gt=0, description=(
        "seconds a one-shot upload (POST /api/v1/images, /api/1/upload) may send no byte of its body before it is "
        "dropped with 408 body-timeout (a slow link that keeps sending is never cut)"))
    bodies_per_caller: int = Field(8, ge=0, description=(
        "one-shot upload bodies one API key, user or (anonymous) client address may send to one web node at once; "
        "one more gets 429 too-many-open-uploads before its body is read; 0 = no cap"))
    allow_anonymous: bool = Field(True, description=(
        "offer uploads without an account (set it as on the managers, which enforce it: false makes the upload "
        "page ask visitors to log in and refuses an anonymous POST before reading its body)"))
    page_cache_s: int = Field(5, ge=0, le=3600, description=(
        "seconds a proxy may keep an anonymous visitor's page of a public, ready image (X-Accel-Expires, "
        "deploy/nginx/page-cache.conf); 0 = never"))
    drain_delay_s: float = Field(1.0, ge=0, description="seconds /readyz fails before the server stops")
    login_max_failures: int = Field(
        20, gt=0, description="failed logins per account and address (5x per address, 10x per account) per window"
    )
    login_window_s: int = Field(900, gt=0, description="login throttle window in seconds")
    trusted_proxies: str = Field(
        "", description="comma-separated addresses/networks of the reverse proxy in front of this node (one hop, "
        "e.g. 10.0.0.0/8). Set: the client address comes from X-Forwarded-For, and requests that did not come "
        "through it are refused (400), but /healthz and /readyz. Empty: the peer address is the client, so behind "
        "a proxy every visitor shares its per-address limits (anonymous uploads: 20 a minute by default)")
    register_per_hour: int = Field(
        REGISTRATIONS_PER_HOUR, ge=0, description="new accounts one client address may register per hour; 0 = no limit"
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, value: str) -> str:
        """``value`` if every comma-separated entry is an IP address or network (as aiohttp-remotes
        reads them: no host bits set in a network); ValueError naming the first that is not."""
        proxy_networks(value)
        return value

    @property
    def max_upload_bytes(self) -> int:
        return self.limits.max_upload_bytes

    def base_url(self, bound_port: int | None = None) -> str:
        """The public URL of this origin, defaulting to ``http://host:port``."""
        if self.http.public_url:
            return self.http.public_url.rstrip("/")
        return f"http://{self.http.host}:{bound_port or self.http.port}"

    def redacted(self) -> str:
        """As :meth:`NodeSettings.redacted`, plus the password of the Redis URL masked."""
        data = json.loads(super().redacted())
        url = URL(self.redis.url)
        if url.password:
            data["redis"]["url"] = str(url.with_password("**********"))
        return json.dumps(data, indent=2)
