"""One MQTT session wrapper used by everything that talks to the broker: device agents, the host's
ingest and rollout controller, and the fleet simulator.

paho-mqtt with callback API v2 and typed callbacks; MQTT 5 by default, 3.1.1 where the broker has
no MQTT 5 (``protocol="3.1.1"``, or ``"auto"`` which falls back after a refused MQTT 5 CONNECT);
``connect_async`` + ``loop_start``; reconnect with exponential backoff; subscriptions made in
``on_connect`` (so they come back after every reconnect); a connection is marked up only after a
successful CONNACK; every ``on_message`` is guarded, logged and counted.

Manual acknowledgement (``on_delivery``, for a consumer that must not lose what it was sent): the
session leaves the PUBACK to the caller, who acks each ``Delivery`` once it has stored it. A message
that was never acked is redelivered by the broker when the (persistent) session reconnects, so an
ack is sent only on the connection the message came on: after a disconnect its packet id may name
another message. ``receive_maximum`` (MQTT 5) tells the broker how many unacked messages it may have
in flight to us; Mosquitto uses it instead of its ``max_inflight_messages``.

A PUBACK may say "No matching subscribers" (MQTT 5, 0x10): the broker took the message and dropped it.
``unrouted(mid)`` tells; a sender that must not lose it (the agent's outbox) sends it again later.
Mosquitto 2.0 says so after a restart until a persisted *shared* subscription's client reconnects.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from shared.mqtt_settings import BrokerSettings, ProtocolChoice

__all__ = ["BrokerSettings", "Delivery", "MqttSession", "ProtocolChoice", "SessionStats"]
log = logging.getLogger(__name__)


class _QuietStop(logging.Filter):
    """paho 2.2 logs "Client is not connected" at ERROR when its loop ends after a clean
    disconnect; that is our own orderly stop, not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


_PAHO_LOG = logging.getLogger("paho")
_PAHO_LOG.addFilter(_QuietStop())
MessageHandler = Callable[[str, bytes], None]
_NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT 5 PUBACK reason code


@dataclass(frozen=True, slots=True)
class Delivery:
    """What ``MqttSession.ack`` needs to acknowledge one received message."""

    mid: int
    qos: int
    connection: int  # which connection of the session it came on


DeliveryHandler = Callable[[str, bytes, Delivery], None]


@dataclass
class SessionStats:
    connects: int = 0
    disconnects: int = 0
    messages: int = 0
    bad_messages: int = 0
    published: int = 0
    acked: int = 0
    acks_sent: int = 0  # manual acknowledgement: deliveries acked
    acks_stale: int = 0  # acks not sent: the message came on an earlier connection (the broker redelivers it)
    unrouted: int = 0  # PUBACKs that said no subscription matched (the broker dropped the message)
    protocol: str = ""
    last_error: str = ""
    handler_errors: dict[str, int] = field(default_factory=dict)


class MqttSession:
    """A long-lived, self-healing MQTT connection."""

    def __init__(
        self,
        settings: BrokerSettings,
        client_id: str,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_message: MessageHandler | None = None,
        will: tuple[str, bytes, int, bool] | None = None,
        on_connected: Callable[[], None] | None = None,
        on_published: Callable[[int], None] | None = None,
        on_disconnected: Callable[[], None] | None = None,
        persistent: bool = True,
        on_delivery: DeliveryHandler | None = None,
        receive_maximum: int | None = None,
    ) -> None:
        """``on_delivery`` instead of ``on_message``: the caller acks each message itself (``ack``)."""
        self.settings = settings
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        self._on_message = on_message
        self._will = will
        self._on_connected = on_connected
        self._on_published = on_published
        self._on_disconnected = on_disconnected
        self._persistent = persistent
        self._on_delivery = on_delivery
        self._receive_maximum = receive_maximum
        self._connection = 0  # counts disconnects; a Delivery is acked only on its own connection
        self._ack_lock = threading.Lock()
        self._unrouted: set[int] = set()  # mids whose latest PUBACK said "No matching subscribers"
        self.connected = threading.Event()
        self.connected_since = 0.0  # monotonic time of the latest CONNACK
        self.stats = SessionStats()
        self._protocol: ProtocolChoice = "5" if settings.protocol in ("5", "auto") else "3.1.1"
        self._lock = threading.Lock()
        self._stopping = False
        self._client = self._make_client()

    # -- set-up -----------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        s = self.settings
        v5 = self._protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else not self._persistent,
            reconnect_on_failure=True,
            manual_ack=self._on_delivery is not None,
        )
        client.enable_logger(_PAHO_LOG)
        if s.username:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            client.tls_set(
                ca_certs=s.ca_file,
                certfile=s.cert_file,
                keyfile=s.key_file,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            client.tls_insecure_set(s.tls_insecure)
        if self._will is not None:
            topic, payload, qos, retain = self._will
            client.will_set(topic, payload, qos=qos, retain=retain)
        client.reconnect_delay_set(min_delay=max(1, int(s.reconnect_min_s)), max_delay=max(1, int(s.reconnect_max_s)))
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)  # unbounded in memory; durability is the caller's outbox
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        client.on_subscribe = self._handle_subscribe
        return client

    def _connect_properties(self) -> Properties | None:
        if self._protocol != "5":
            return None
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.session_expiry_s if self._persistent else 0
        if self._receive_maximum is not None:
            props.ReceiveMaximum = self._receive_maximum
        return props

    # -- public -----------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background; reconnects forever until ``stop``."""
        s = self.settings
        self._client.connect_async(
            s.host,
            s.port,
            keepalive=s.keepalive,
            clean_start=(not self._persistent) if self._protocol == "5" else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=self._connect_properties(),
        )
        self._client.loop_start()
        if self.settings.protocol == "auto" and self._protocol == "5":
            threading.Thread(target=self._fallback_watchdog, name="mqtt-v5-watchdog", daemon=True).start()

    def _fallback_watchdog(self) -> None:
        """Some 3.1.1-only brokers (amqtt) neither answer nor close an MQTT 5 CONNECT: give up on 5
        when no CONNACK arrives in time."""
        if (
            not self.connected.wait(self.settings.v5_connack_timeout_s)
            and not self._stopping
            and self.stats.connects == 0
        ):
            self._fall_back_to_311()

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> mqtt.MQTTMessageInfo:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        self.stats.published += 1
        return info

    def unrouted(self, mid: int) -> bool:
        """True when the broker's PUBACK for ``mid`` said no subscription matched (it dropped the message).
        Read it once ``is_published()``: paho calls ``on_publish`` (which records it) before that flips."""
        return mid in self._unrouted

    def ack(self, delivery: Delivery) -> bool:
        """Acknowledge a message received through ``on_delivery``; False when it came on an earlier
        connection (nothing is sent: the broker redelivers it on this one). Safe from any thread."""
        if delivery.qos == 0:
            return True
        with self._ack_lock:  # against a disconnect in between: see _handle_disconnect
            if delivery.connection != self._connection:
                self.stats.acks_stale += 1
                return False
            self._client.ack(delivery.mid, delivery.qos)
            self.stats.acks_sent += 1
        return True

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self.subscriptions.append((topic_filter, qos))
        if self.connected.is_set():
            self._client.subscribe(topic_filter, qos)

    def unsubscribe(self, topic_filter: str) -> None:
        """Also a subscription that a resumed persistent session brought back without our asking."""
        self.subscriptions = [(f, q) for f, q in self.subscriptions if f != topic_filter]
        if self.connected.is_set():
            self._client.unsubscribe(topic_filter)

    def stop(
        self, final: tuple[str, bytes, int, bool] | None = None, timeout: float = 5.0, end_session: bool = False
    ) -> None:
        """Publish ``final`` (e.g. a retained offline status), disconnect cleanly, stop the thread.
        ``end_session`` (MQTT 5): the broker drops the persistent session instead of keeping it."""
        self._stopping = True
        try:
            if final is not None and self.connected.is_set():
                topic, payload, qos, retain = final
                info = self._client.publish(topic, payload, qos=qos, retain=retain)
                deadline = time.monotonic() + timeout
                while not info.is_published() and time.monotonic() < deadline and self.connected.is_set():
                    time.sleep(0.02)
            was_connected = self.connected.is_set()
            props = None
            if end_session and self._protocol == "5":
                props = Properties(PacketTypes.DISCONNECT)
                props.SessionExpiryInterval = 0
            self._client.disconnect(properties=props)
            if was_connected:  # let the network thread process the DISCONNECT before it is stopped
                deadline = time.monotonic() + timeout
                while self.connected.is_set() and time.monotonic() < deadline:
                    time.sleep(0.01)
        finally:
            self._client.loop_stop()
            self.connected.clear()

    @property
    def protocol(self) -> str:
        return self._protocol

    # -- paho callbacks (network thread): never let an exception escape ---------------------
    def _handle_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Properties | None
    ) -> None:
        if reason.is_failure:
            self.stats.last_error = f"CONNACK refused: {reason}"
            log.warning("broker %s refused the connection: %s", self.settings.url, reason)
            if self.settings.protocol == "auto" and self._protocol == "5" and reason.value in (0x84, 0x01):
                self._fall_back_to_311()
            return
        with self._ack_lock:
            self._connection += 1  # (a disconnect counted already; this covers a reconnect without one)
        self.stats.connects += 1
        self.stats.protocol = "MQTT 5" if self._protocol == "5" else "MQTT 3.1.1"
        log.info("connected to %s (%s) as %s", self.settings.url, self.stats.protocol, self.client_id)
        for topic_filter, qos in self.subscriptions:
            client.subscribe(topic_filter, qos)
        self.connected_since = time.monotonic()
        self.connected.set()
        if self._on_connected is not None:
            self._guard("on_connected", self._on_connected)

    def _handle_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.stats.last_error = "connection failed"
        log.debug("connection to %s failed; retrying with backoff", self.settings.url)
        if self.settings.protocol == "auto" and self._protocol == "5" and self.stats.connects == 0:
            self._fall_back_to_311()

    def _fall_back_to_311(self) -> None:
        """The broker refused MQTT 5 (e.g. amqtt): start over speaking 3.1.1."""
        with self._lock:
            if self._protocol != "5":
                return
            self._protocol = "3.1.1"
        with self._ack_lock:
            self._connection += 1  # a new client: nothing received by the old one can be acked
        log.info("broker %s refused MQTT 5; falling back to MQTT 3.1.1", self.settings.url)

        def restart() -> None:
            with self._lock:
                old = self._client
                old.loop_stop()
                old.disconnect()
                self._client = self._make_client()
                if not self._stopping:
                    self.start()

        threading.Thread(target=restart, name="mqtt-fallback", daemon=True).start()

    def _handle_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Properties | None
    ) -> None:
        with self._ack_lock:
            # an ack queued before this is dropped by paho's reconnect (it clears its packet queue);
            # one asked for after it would go out on the next connection, where the id is not its own
            self._connection += 1
        was_connected = self.connected.is_set()
        self.connected.clear()
        if was_connected:
            self.stats.disconnects += 1
            if not self._stopping:
                log.warning("lost connection to %s (%s); reconnecting", self.settings.url, reason)
            if self._on_disconnected is not None:
                self._guard("on_disconnected", self._on_disconnected)
        elif (
            self.settings.protocol == "auto"
            and self._protocol == "5"
            and self.stats.connects == 0
            and not self._stopping
        ):
            self._fall_back_to_311()  # some 3.1.1-only brokers just drop an MQTT 5 CONNECT

    def _handle_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.stats.messages += 1
        if self._on_delivery is not None:
            self._deliver(message)
            return
        if self._on_message is None:
            return
        try:
            self._on_message(message.topic, bytes(message.payload))
        except Exception:  # a bad message must never kill the network thread
            self.stats.bad_messages += 1
            log.exception("error handling a message on %s (dropped)", message.topic)

    def _deliver(self, message: mqtt.MQTTMessage) -> None:
        delivery = Delivery(message.mid, message.qos, self._connection)
        try:
            self._on_delivery(message.topic, bytes(message.payload), delivery)  # type: ignore[misc]
        except Exception:  # as in _handle_message; acked, or it would come back after every reconnect
            self.stats.bad_messages += 1
            log.exception("error handling a message on %s (dropped)", message.topic)
            self.ack(delivery)

    def _handle_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Properties | None
    ) -> None:
        self.stats.acked += 1
        if reason.value == _NO_MATCHING_SUBSCRIBERS:
            self.stats.unrouted += 1
            self._unrouted.add(mid)
        else:  # a mid is reused only after its PUBACK: this one speaks for the message now using it
            self._unrouted.discard(mid)
        if self._on_published is not None:
            self._guard("on_published", lambda: self._on_published(mid))  # type: ignore[misc]

    def _handle_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Properties | None
    ) -> None:
        for r in reasons:
            if r.is_failure:
                log.error("broker refused a subscription: %s", r)

    def _guard(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            self.stats.handler_errors[name] = self.stats.handler_errors.get(name, 0) + 1
            log.exception("error in %s callback", name)
