"""Manager settings (env prefix ``PIXELFOX_``, nesting ``__``)."""

from __future__ import annotations

from pydantic import Field, field_validator

from nodes.manager.repair import RepairSettings
from nodes.manager.tiers import TierSettings
from pixelfox.config import DatabaseSettings, LimitsSettings, NodeSettings, RedisSettings, proxy_networks
from pixelfox.signing import UrlSigningSettings


class ManagerSettings(NodeSettings):
    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    limits: LimitsSettings = LimitsSettings()
    site_url: str = Field("", description="public base URL of the web site; default: first healthy web node")
    allow_anonymous: bool = Field(True, description="accept uploads without an account")
    grpc_trusted_proxies: str = Field(
        "", description="comma-separated addresses/networks of a gRPC proxy in front of this manager (envoy, nginx "
        "grpc_pass; e.g. 10.0.0.0/8). A call from one of them is counted on the anonymous upload budget of the "
        "address its x-forwarded-for metadata ends with (the one that proxy added). Empty: the peer address, so "
        "behind a proxy every direct anonymous upload shares its budget")
    replicas: int = Field(2, ge=1, description="copies of every object, capped by healthy storage nodes")
    node_timeout_s: float = Field(5.0, gt=0, description=(
        "a node without a heartbeat this long is inactive; nodes heartbeating less than 3 times in it are refused"))
    # >= 1 s: at 0 the manager reclaimed its own jobs in flight (each sent 2-3 times), below 0 Redis refused
    # XAUTOCLAIM and no job was sent at all
    lease_s: float = Field(120.0, ge=1, description="job lease in seconds; a job whose manager vanished is retaken "
                           "after this")
    max_attempts: int = Field(3, ge=1, description="job attempts before the dead-letter list")
    # issue 7: job reliability (docs/jobs.md)
    job_lease_s: float = Field(15.0, gt=0, description="processing-node lease; a job not extended this long is re-run")
    job_timeout_s: float = Field(120.0, gt=0, description="per-job time limit passed to the processing node "
                                 "(its per-image PIXELFOX_LIMITS__PROCESS_TIMEOUT_S applies when shorter)")
    max_lost: int = Field(10, ge=1, description="runs lost to dead nodes before the dead-letter list")
    retry_base_s: float = Field(1.0, gt=0, description="first retry back-off (doubles per attempt, with jitter)")
    retry_cap_s: float = Field(60.0, gt=0, description="longest retry back-off")
    outbox_interval_s: float = Field(5.0, gt=0, description="seconds between outbox passes")
    recipe_version: int = Field(
        4, ge=1, description="recipe version new uploads get (2: AVIF by libaom; 3: JPEG shrink-on-load; 4: medium "
                             "AVIF without rectangular partitions; bump with pixelfox.imaging.Recipe.version when "
                             "outputs change)")
    repair: RepairSettings = RepairSettings()  # issue 6: replica repair (nodes/manager/repair.py)
    tiers: TierSettings = TierSettings()  # issue 6: hot -> warm -> cold moves (nodes/manager/tiers.py)
    url_signing: UrlSigningSettings = UrlSigningSettings()
    purge_hook_url: str = Field("", description="POSTed {event, urls} when files of an image stop being public")
    gc_interval_s: float = Field(10.0, gt=0, description="seconds between retries of missed deletes and purges")

    @field_validator("grpc_trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, value: str) -> str:
        """``value`` if every comma-separated entry is an IP address or network; ValueError naming the
        first that is not (:func:`pixelfox.config.proxy_networks`)."""
        proxy_networks(value)
        return value
