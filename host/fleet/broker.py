"""Embedded MQTT broker for the offline demo and single-box set-ups (amqtt, in a thread).

Deployments run Mosquitto (``deploy/mosquitto``). amqtt 0.12.1 speaks MQTT 3.1.1 only and does
not deliver ``$share/...`` subscriptions (measured; docs/design.md, "MQTT"), so clients of the embedded
broker use protocol 3.1.1 and a single ingest worker with a plain subscription.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from shared.errors import EdgeloopError

log = logging.getLogger(__name__)


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host, self.port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise EdgeloopError("the embedded MQTT broker did not start in time")
        if self._error is not None:
            raise EdgeloopError(f"cannot start the embedded MQTT broker on {self.host}:{self.port}: {self._error}")
        log.info("embedded MQTT broker (amqtt, MQTT 3.1.1) on %s", self.url)

    def _run(self) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError as e:
            self._error = EdgeloopError("the embedded broker needs amqtt: pip install 'edgeloop[host]'")
            self._ready.set()
            raise SystemExit from e
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        try:
            self._broker = Broker(config, loop=loop)
            loop.run_until_complete(self._broker.start())
        except Exception as e:  # noqa: BLE001  (amqtt raises many types: port in use, bad config...)
            self._error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self) -> None:
        loop, broker = self._loop, self._broker
        if loop is None or broker is None or not loop.is_running():
            return
        fut = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
        try:
            fut.result(timeout=10)
        except Exception as e:  # noqa: BLE001  (shutting down anyway; amqtt's errors are not ours to handle)
            log.debug("embedded broker shutdown: %s", e)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
