"""Test helpers: real brokers and HTTP servers on free loopback ports, tiny models."""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from shared import protocol, signing
from shared.ports import free_loopback_port
from shared.protocol import SignedCommand

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    return free_loopback_port()


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def wait_healthy(url: str, timeout: float = 60.0) -> None:
    """Wait until ``url``/healthz answers 200 (an inference server answers 503 while its engine loads)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url + "/healthz", timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url}/healthz did not answer 200 within {timeout:.0f} s")


@dataclass
class Mosquitto:
    """A real Mosquitto on a free loopback port; restartable with its persistence kept."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    # 1 s keeps the outbox tests' restart-with-persistence honest; the scale benchmark raises it,
    # because rewriting a 100,000-message backlog every second costs the broker a core.
    autosave_interval: int = 1
    max_inflight_messages: int = 20

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {self.workdir}/\nautosave_interval {self.autosave_interval}\n"
            f"max_queued_messages 1000000\nmax_inflight_messages {self.max_inflight_messages}\n"
            f"log_dest file {self.workdir}/mosquitto.log\n" + ("user root\n" if os.geteuid() == 0 else "")
            # started as root, Mosquitto drops to the `mosquitto` user, which cannot write its
            # persistence file into pytest's private temp dir: sessions would not survive a restart
        )
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def kill(self) -> None:
        """``kill -9``: what was not autosaved (sessions, queued messages) is lost."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


def mosquitto_available() -> bool:
    return shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()


def signed(cmd: SignedCommand, key: Path) -> bytes:
    """A command as the host sends it: signed with ``key`` (the agents of the tests trust its public key)."""
    return protocol.encode(signing.sign(cmd, signing.load_private_key(key)))


class Recorder:
    """A plain paho MQTT 5 client that records every message under a filter."""

    def __init__(self, port: int, topic_filter: str = "edgeloop/#", client_id: str = "test-recorder") -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic_filter, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def topics(self, suffix: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def wait_for(self, suffix: str, count: int = 1, timeout: float = 60.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.topics(suffix)
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise TimeoutError(f"waited {timeout}s for {count} message(s) on *{suffix}; got {len(self.topics(suffix))}")

    def wait_online(self, timeout: float = 60.0) -> None:
        """Until an agent's "online" status arrived: it has subscribed to its commands by then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(protocol.decode_status(raw).state == "online" for raw in self.topics("/status")):
                return
            time.sleep(0.1)
        raise TimeoutError(f"no agent came online within {timeout:.0f}s")

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(timeout=10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def http_server(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP (stdlib; supports plain GET) on a free loopback port."""

    def handler(*args: object, **kwargs: object) -> _QuietHandler:
        return _QuietHandler(*args, directory=str(directory), **kwargs)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def agent_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGELOOP_")}
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single-range GET support (for resume tests), quiet logs."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not rng or not path.is_file():
            super().do_GET()
            return
        start = int(rng.removeprefix("bytes=").split("-")[0])
        data = path.read_bytes()
        if start >= len(data):
            self.send_error(416)
            return
        self.send_response(206)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        self.wfile.write(data[start:])


@contextlib.contextmanager
def range_server(directory: Path) -> Iterator[tuple[str, list[str]]]:
    """Like http_server, with Range support; yields (base URL, list of Range headers seen)."""
    seen: list[str] = []

    class Handler(RangeHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Range") or "")
            super().do_GET()

    def factory(*args: object, **kwargs: object) -> Handler:
        return Handler(*args, directory=str(directory), **kwargs)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), factory)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", seen
    finally:
        server.shutdown()
        server.server_close()
