"""``edgeloop serve``: one host process with the artifact server, telemetry ingest, the rollout
controller, field re-calibration, the REST API, the dashboard and /metrics. Optionally an embedded
MQTT broker."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from host.fleet.broker import EmbeddedBroker
from host.fleet.ingest import Ingest, IngestProcess, IngestWatchdog
from host.fleet.recalibration import CalibrationSets, Recalibrations
from host.fleet.release import ReleaseStore
from host.fleet.rollout import RolloutController
from host.fleet.samples import FieldSamples
from host.fleet.signer import CommandSigner
from host.fleet.store import Store
from host.fleet.web.app import create_app
from shared.errors import EdgeloopError
from shared.mqtt import BrokerSettings, MqttSession

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
    broker_protocol: str = "5"
    embedded_broker: bool = False
    embedded_broker_port: int = 1883
    ingest_workers: int = 1
    shared_subscription: bool | None = None  # default: on for MQTT 5, off for the embedded broker
    uploads: Path | None = None
    tick_s: float = 0.5
    broker_username: str | None = None
    broker_password: str | None = field(default=None, repr=False)
    command_key: Path | None = None  # ed25519 private key that signs every command

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/") + "/"


class HostServer:
    """The host process; it is also what the web app needs from it (``host.fleet.web.deps.FleetHost``)."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.broker: EmbeddedBroker | None = None
        if config.embedded_broker:
            self.broker = EmbeddedBroker(port=config.embedded_broker_port)
            config.broker_url = self.broker.url
            config.broker_protocol = "3.1.1"
        self.store = Store(config.store_url)
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
        # worker 0 runs here (it also records statuses); any further worker gets its own process,
        # because ingest is CPU-bound Python and threads of one process share one GIL
        self.ingests: list[Ingest | IngestProcess] = [
            Ingest(self.store, self._broker_settings(), worker=0, shared=shared, statuses=True)
        ]
        self.ingests += [
            IngestProcess(config.store_url, self._broker_settings(), worker=i, shared=shared, statuses=False)
            for i in range(1, config.ingest_workers)
        ]
        self.ingest_watchdog = IngestWatchdog(self.ingests)  # restarts a dead worker; health shows it
        self.publisher = MqttSession(self._broker_settings(), client_id=f"edgeloop-host-{config.port}")
        self.signer = CommandSigner(config.command_key)
        self.controller = RolloutController(self.store, self.publish, config.base_url, config.tick_s, self.signer)
        sets = CalibrationSets(self.release_store.root / "calibration-sets")
        self.recalibrations = Recalibrations(self.store, self.publish, sets, config.base_url, self.signer)
        self._http: uvicorn.Server | None = None
        self._http_thread: threading.Thread | None = None

    def _broker_settings(self) -> BrokerSettings:
        c = self.config
        return BrokerSettings.from_url(
            c.broker_url,
            protocol=c.broker_protocol,
            username=c.broker_username,
            password=c.broker_password,
        )

    def broker_connected(self) -> bool:
        return self.publisher.connected.is_set()

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
        self.controller.start()
        self.recalibrations.run()
        log.info(
            "serving on %s (broker %s, store %s)", self.config.base_url, self.config.broker_url, self.store.dialect
        )

    def _start_http(self) -> None:
        import uvicorn

        config = uvicorn.Config(
            create_app(self),
            host=self.config.host,
            port=self.config.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self._http = uvicorn.Server(config)
        self._http_thread = threading.Thread(target=self._http.run, name="http", daemon=True)
        self._http_thread.start()
        deadline = time.monotonic() + 15
        while not self._http.started:
            if time.monotonic() > deadline or not self._http_thread.is_alive():
                raise EdgeloopError(f"the HTTP server could not start on {self.config.host}:{self.config.port}")
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
        self.publisher.stop()
        if self.broker is not None:
            self.broker.stop()
        self.store.close()
        log.info("host stopped")
