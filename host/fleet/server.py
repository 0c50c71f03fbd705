"""``edgeloop serve``: one host process with the artifact server, telemetry ingest, the rollout
controller, field re-calibration, the REST API, the dashboard and /metrics. Optionally an embedded
MQTT broker.

Every MQTT connection it opens (the publisher, each ingest worker, in this process or its own) uses the
same ``BrokerSettings``: TLS and a client certificate when configured (``host.fleet.tls``). The REST API
needs the operator token unless the server runs open on a loopback bind (``host.fleet.web.auth``).

Several processes may serve one PostgreSQL store and one broker (``host.fleet.replica``): each is a replica
with an id, each serves the API, artifacts and ingest, and the holder of the controller lease drives the
rollouts. SQLite serves one process (a second one on the same file is refused at start)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from host.fleet.broker import EmbeddedBroker
from host.fleet.ingest import Ingest, IngestProcess, IngestWatchdog
from host.fleet.recalibration import CalibrationSets, Recalibrations
from host.fleet.release import ReleaseStore
from host.fleet.replica import ReplicaKeeper, default_replica_id
from host.fleet.replica.identity import check_replica_id, refuse_live_peers
from host.fleet.rollout import RolloutController
from host.fleet.samples import FieldSamples
from host.fleet.signer import CommandSigner
from host.fleet.store import Store
from host.fleet.tls import BrokerTls, broker_settings
from host.fleet.web.app import create_app
from host.fleet.web.auth import ApiAuth, is_loopback
from shared.errors import EdgeloopError
from shared.httpserver import HttpLimits, uvicorn_config
from shared.mqtt import BrokerSettings, MqttSession, ProtocolChoice

if TYPE_CHECKING:
    import uvicorn  # imported when the HTTP server starts

log = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    releases: Path
    store_url: str
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    broker_url: str = "mqtt://127.0.0.1:1883"
    broker_protocol: ProtocolChoice = "5"
    embedded_broker: bool = False
    embedded_broker_port: int = 1883
    ingest_workers: int = 1
    shared_subscription: bool | None = None  # default: on for MQTT 5, off for the embedded broker
    uploads: Path | None = None
    tick_s: float = 0.5
    broker_username: str | None = None
    broker_password: str | None = field(default=None, repr=False)
    command_key: Path | None = None  # ed25519 private key that signs every command
    broker_tls: BrokerTls = field(default_factory=BrokerTls)
    api_token: str | None = field(default=None, repr=False)  # None: open, allowed on a loopback bind only
    upload_secret: bytes | None = field(default=None, repr=False)  # the devices' upload tokens' key
    http_cert: Path | None = None  # HTTPS: certificate chain and key (e.g. the broker's, from `edgeloop certs`)
    http_key: Path | None = None
    # devices download artifacts during a rollout wave all at once: room for a large fleet's wave
    http_limits: HttpLimits = field(default_factory=lambda: HttpLimits(max_connections=1024))
    replica_id: str | None = None  # default: the host name (replica.default_replica_id)
    lease_s: float = 15.0  # the controller lease and the ingest slots: renewed every third of it

    @property
    def base_url(self) -> str:
        scheme = "https" if self.http_cert is not None else "http"
        return (self.public_url or f"{scheme}://{self.host}:{self.port}").rstrip("/") + "/"


def _api_auth(config: ServeConfig) -> ApiAuth:
    """Open (no token) only when nothing off this machine can reach the server: a loopback bind, and a
    loopback public URL (anything else means devices or a proxy elsewhere reach it)."""
    public = urlsplit(config.base_url).hostname or ""
    if config.api_token is None and not (is_loopback(config.host) and is_loopback(public)):
        raise EdgeloopError(
            f"{config.base_url} is reachable from other machines, so the REST API needs a token: "
            "--api-token-file FILE (a new token is written there when FILE does not exist) or EDGELOOP_API_TOKEN"
        )
    if (config.http_cert is None) != (config.http_key is None):
        raise EdgeloopError("--http-cert and --http-key go together")
    return ApiAuth(config.api_token, config.upload_secret)


class HostServer:
    """The host process; it is also what the web app needs from it (``host.fleet.web.deps.FleetHost``)."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.auth = _api_auth(config)
        self.broker: EmbeddedBroker | None = None
        if config.embedded_broker:
            self.broker = EmbeddedBroker(port=config.embedded_broker_port)
            config.broker_url = self.broker.url
            config.broker_protocol = "3.1.1"
        self.store = Store(config.store_url)
        self.replica = self._replica(config)
        self.release_store = ReleaseStore(config.releases)
        self.release_store.root.mkdir(parents=True, exist_ok=True)
        self.uploads = config.uploads or (config.releases / "uploads")
        self.samples = FieldSamples(self.uploads)
        shared = config.shared_subscription
        if shared is None:
            shared = config.broker_protocol == "5" and not config.embedded_broker
        if config.ingest_workers < 1:
            raise EdgeloopError("--ingest-workers must be at least 1")
        in_memory = ":memory:" in config.store_url or config.store_url in ("sqlite://", "sqlite:///")
        if config.ingest_workers > 1 and in_memory:
            raise EdgeloopError("several ingest workers need a store on disk or a server, not an in-memory SQLite")
        if config.ingest_workers > 1 and not shared:
            raise EdgeloopError("several ingest workers need an MQTT 5 shared subscription (not the embedded broker)")
        # the first worker runs here (it also records statuses); any further worker gets its own process,
        # because ingest is CPU-bound Python and threads of one process share one GIL. Each has an ingest
        # slot of the replica (its MQTT client id): a replica that dies leaves its slots to the others
        if shared:
            self.replica.adopt = lambda slot: Ingest(self.store, self._broker_settings(), worker=slot, drain=True)
        first, *more = self.replica.claim_slots(config.ingest_workers)
        self.ingests: list[Ingest | IngestProcess] = [
            Ingest(self.store, self._broker_settings(), worker=first, shared=shared, statuses=True)
        ]
        self.ingests += [
            IngestProcess(config.store_url, self._broker_settings(), worker=i, shared=shared, statuses=False)
            for i in more
        ]
        self.ingest_watchdog = IngestWatchdog(self.ingests)  # restarts a dead worker; health shows it
        self.publisher = MqttSession(self._broker_settings(), client_id=f"edgeloop-host-{self.replica.replica_id}")
        self.signer = CommandSigner(config.command_key)
        self.controller = RolloutController(
            self.store, self.publish, config.base_url, config.tick_s, self.signer, lease=self.replica.controller
        )
        sets = CalibrationSets(self.release_store.root / "calibration-sets")
        self.recalibrations = Recalibrations(
            self.store, self.publish, sets, config.base_url, self.signer, lease=self.replica.controller
        )
        self._http: uvicorn.Server | None = None
        self._http_thread: threading.Thread | None = None

    def _replica(self, config: ServeConfig) -> ReplicaKeeper:
        replica_id = check_replica_id(config.replica_id or default_replica_id())
        if config.lease_s < 2:
            raise EdgeloopError("--lease-seconds must be at least 2 (the lease is renewed every third of it)")
        refuse_live_peers(self.store, replica_id, config.lease_s)
        return ReplicaKeeper(self.store, replica_id, config.lease_s)

    def replica_status(self) -> dict[str, object]:
        return self.replica.status()

    def _broker_settings(self) -> BrokerSettings:
        c = self.config
        return broker_settings(c.broker_url, c.broker_tls, c.broker_protocol, c.broker_username, c.broker_password)

    def broker_connected(self) -> bool:
        return self.publisher.connected.is_set()

    @property
    def http_limits(self) -> HttpLimits:
        return self.config.http_limits

    @property
    def base_url(self) -> str:
        return self.config.base_url

    def publish(self, topic: str, payload: bytes) -> bool:
        if not self.publisher.connected.is_set():
            return False
        info = self.publisher.publish(topic, payload, qos=1)
        try:
            info.wait_for_publish(timeout=5)
        except (RuntimeError, ValueError):
            return False
        return bool(info.is_published())

    def sync_releases(self) -> int:
        n = 0
        for manifest in self.release_store.all():
            self.store.add_release(manifest)
            n += 1
        return n

    def start(self) -> None:
        if self.broker is not None:
            self.broker.start()
        self.sync_releases()
        for ing in self.ingests:
            ing.start()
        self.ingest_watchdog.start()
        self.publisher.start()
        self.publisher.wait_connected(10)
        self._start_http()
        self.replica.start()
        self.controller.start()
        self.recalibrations.run()
        log.info(
            "replica %s serving on %s (broker %s, store %s, controller lease %s)",
            self.replica.replica_id,
            self.config.base_url,
            self.config.broker_url,
            self.store.dialect,
            "held" if self.replica.controller.holds() else "held by another replica",
        )

    def _start_http(self) -> None:
        import uvicorn

        c = self.config
        config = uvicorn_config(
            create_app(self), c.host, c.port, c.http_limits, ssl_certfile=c.http_cert, ssl_keyfile=c.http_key
        )
        self._http = uvicorn.Server(config)
        self._http_thread = threading.Thread(target=self._http.run, name="http", daemon=True)
        self._http_thread.start()
        deadline = time.monotonic() + 15
        while not self._http.started:
            if not self._http_thread.is_alive():  # uvicorn logged why: most often the port is taken
                raise EdgeloopError(
                    f"the HTTP server could not start on {self.config.host}:{self.config.port} "
                    "(is the port in use? --port chooses another)"
                )
            if time.monotonic() > deadline:
                raise EdgeloopError(f"the HTTP server did not start on {self.config.host}:{self.config.port} in 15 s")
            time.sleep(0.05)

    def stop(self) -> None:
        self.controller.stop()
        self.recalibrations.stop()
        if self._http is not None:
            self._http.should_exit = True
            if self._http_thread is not None:
                self._http_thread.join(timeout=10)
        self.ingest_watchdog.stop()
        for ing in self.ingests:
            ing.stop()
        self.replica.stop()  # after the workers: their sessions are whole when another replica adopts them
        self.publisher.stop()
        if self.broker is not None:
            self.broker.stop()
        self.store.close()
        log.info("host stopped")
