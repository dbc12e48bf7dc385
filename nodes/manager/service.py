"""The manager's logic, one object wiring the parts together; no gRPC imports here."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nodes.manager.account_ops import AccountOps
from nodes.manager.accounts import Accounts, enabled
from nodes.manager.admin import Admin
from nodes.manager.albums import Albums
from nodes.manager.config import ManagerSettings
from nodes.manager.dispatch import Dispatcher, DispatchPolicy
from nodes.manager.images import ImageViews
from nodes.manager.jobs import JobAdmin
from nodes.manager.library import Library
from nodes.manager.objects import Objects
from nodes.manager.outbox import OutboxDrainer
from nodes.manager.registry import Registry
from nodes.manager.reports import Reports
from nodes.manager.uploads import Uploads
from pixelfox import errors, ratelimit, signing, tickets
from pixelfox.config import proxy_networks
from pixelfox.db.models import User
from pixelfox.grpcx.auth import Caller
from pixelfox.queue import JobQueue


@dataclass(frozen=True)
class Principal:
    """The caller after verification: a cluster node, a user, both (web acting for a user), or anonymous."""

    cluster: bool
    user: User | None

    @property
    def is_admin(self) -> bool:
        return self.cluster or (self.user is not None and self.user.role == "admin")


class ManagerService:
    def __init__(
        self,
        settings: ManagerSettings,
        sessions: async_sessionmaker[AsyncSession],
        registry: Registry,
        queue: JobQueue,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.registry = registry
        self.queue = queue
        self._grpc_proxies = proxy_networks(settings.grpc_trusted_proxies)
        self.accounts = Accounts(sessions)
        self.views = ImageViews(sessions, registry, settings.site_url)
        self.uploads = Uploads(
            sessions, registry, queue, self.views, settings.limits,
            tickets.derive_key(settings.cluster.secret.get_secret_value()), settings.recipe_version,
        )
        self._community(settings, sessions, registry, queue)
        self.dispatcher = Dispatcher(sessions, registry, queue, settings.replicas, settings.lease_s,
                                     DispatchPolicy(settings.job_lease_s, settings.job_timeout_s))
        self.dispatcher.on_recorded = self.library.after_processing
        self.dispatcher.on_orphaned = self.objects.delete_unreferenced  # deleted while processing
        self.uploads.on_orphaned = self.objects.delete_unreferenced  # cancelled after its original was stored
        self.uploads.on_copy = self.objects.copy  # a lost private image's original, restored by a re-upload
        # a writer of some bytes recorded its rows: deletes of those bytes that waited for it (write fence)
        self.dispatcher.on_written = self.objects.written
        self.uploads.on_written = self.objects.written
        self.uploads.deletion_secret = settings.cluster.secret.get_secret_value()  # anonymous uploads' links
        self.jobs = JobAdmin(sessions, queue, self.dispatcher, settings.recipe_version)
        self.outbox = OutboxDrainer(sessions, queue, interval_s=settings.outbox_interval_s)
        self.dispatcher.companions.append(self.outbox.run)  # runs beside the dispatch loop

    def _community(
        self, settings: ManagerSettings, sessions: async_sessionmaker[AsyncSession], registry: Registry, queue: JobQueue
    ) -> None:
        """Issue 5: signed URLs for private images, image management, albums, reports, admin."""
        keys = signing.keys_from(settings.cluster.secret.get_secret_value(), settings.url_signing)
        sign_ttl, bucket = settings.url_signing.ttl_s, settings.url_signing.bucket_s
        self.views.url_signer = lambda key, exp: signing.sign(keys[0], key, exp)
        self.views.url_expiry = lambda: signing.expiry(sign_ttl, bucket)
        self.objects = Objects(
            sessions, registry, queue.redis, settings.cluster.secret.get_secret_value(),
            replicas=settings.replicas, purge_hook_url=settings.purge_hook_url, gc_interval_s=settings.gc_interval_s,
        )
        self.library = Library(sessions, self.views, self.objects, queue.redis,
                               settings.cluster.secret.get_secret_value(), queue=queue)
        self.albums = Albums(sessions, self.views)
        self.reports = Reports(sessions, self.views, self.library)
        self.account_ops = AccountOps(sessions, self.accounts, registry.redis)
        self.admin = Admin(sessions, registry, queue, self.views, self.objects)

    async def principal(self, caller: Caller) -> Principal:
        """Resolve the call's credentials; raises Unauthenticated for a bad API key, AccountDisabled
        for a key or a web session (acting user) of a disabled account."""
        if caller.cluster:
            user = enabled(await self.accounts.get_user(caller.acting_user)) if caller.acting_user else None
            return Principal(cluster=True, user=user)
        if caller.api_key:
            return Principal(cluster=False, user=await self.accounts.resolve_api_key(caller.api_key))
        return Principal(cluster=False, user=None)

    async def key_holder(self, caller: Caller) -> User | None:
        """For a cluster-credential call with no acting user that carries an API key too (the local
        ``pixelfox`` command sends its admin key beside the cluster credential), that key's owner,
        revoked or disabled alike (:meth:`Accounts.key_owner`); None for any other call or an unknown
        key. Not a credential: the cluster credential decides what the call may do; this says whose
        key the command holds, which it must not lock out (``SetUserDisabled``)."""
        if not caller.cluster or caller.acting_user or not caller.api_key:
            return None
        return await self.accounts.key_owner(caller.api_key)

    async def uploader(self, caller: Caller) -> User | None:
        """The user an upload belongs to; anonymous only when ``allow_anonymous``. A web node's call
        for an anonymous visitor is a cluster call with no acting user: refused too (it used to
        pass, so ``PIXELFOX_ALLOW_ANONYMOUS=false`` stopped only direct gRPC callers). Raises
        Unauthenticated."""
        p = await self.principal(caller)
        if p.user is None and not self.settings.allow_anonymous:
            raise errors.Unauthenticated("uploads need an account or an API key")
        return p.user

    async def count_direct_anonymous(self, caller: Caller, peer: str, forwarded_for: str = "") -> None:
        """Count an anonymous upload that came straight to this port (no API key, no node credential:
        ``pixelfox put`` without a key) against its address' anonymous budget, the web node's
        (:func:`pixelfox.ratelimit.anonymous_budget`; ``peer``: ``context.peer()``; ``forwarded_for``:
        its ``x-forwarded-for`` metadata, used when the peer is one of ``grpc_trusted_proxies``:
        :func:`pixelfox.ratelimit.client_address`). A web node's call is not counted: the web counted
        its visitor's address already. Raises RateLimited."""
        if caller.cluster or caller.api_key:
            return
        address = ratelimit.client_address(peer, forwarded_for, self._grpc_proxies)
        budget = ratelimit.anonymous_budget(address, self.settings.limits.anonymous_ip_uploads_per_minute)
        await ratelimit.spend(self.registry.redis, [budget])
