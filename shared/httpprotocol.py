"""``BoundedHttpTools``: uvicorn's httptools protocol with a deadline and a size cap on every request
head, and a backstop deadline on every request body (why: ``shared.httpserver``).

Imported only when a server starts (it needs uvicorn and httptools). uvicorn builds protocols from a
class alone, so ``shared.httpserver.bounded_protocol`` makes a subclass whose class attributes are the
limits.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

# After a refusal, what the client still sends is read and dropped this long before the close: closing
# with unread data makes the kernel send a reset, and the client would lose the refusal with it.
LINGER_S = 2.0


def _refusal(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": reason.lower().replace(" ", "_"), "message": message}).encode()
    head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return head.encode() + b"connection: close\r\n\r\n" + body


class BoundedHttpTools(HttpToolsProtocol):
    header_timeout_s: ClassVar[float] = 10.0
    max_head_bytes: ClassVar[int] = 64 * 1024
    body_timeout_s: ClassVar[float] = 30.0

    _in_head = False
    _refused = False
    _head_bytes = 0
    _head_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None

    # -- uvicorn's and the parser's callbacks ---------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()  # the first request's head: also closes a connection that never sends one

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Bytes of a head still incomplete are counted as they arrive, so a head that never ends is
        # refused as soon as it passes the cap, not held in memory until it does.
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_head_bytes:
            self._refuse_too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # the next request on a keep-alive connection
            self._start_head()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_timers()
        # the parsed head too: a whole head can come in one read, which data_received cannot split
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers) + 16
        if size > self.max_head_bytes:
            self._refuse_too_large()
            return  # no request: the parser's further callbacks find nothing to feed
        super().on_headers_complete()
        # a backstop for every route: the apps' own body timeouts answer 408 before it closes
        self._body_timer = self.loop.call_later(self.body_timeout_s + LINGER_S, self._body_timed_out)

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._stop_timers()
        if not self._refused:
            super().on_message_complete()

    # -- deadlines and refusals -----------------------------------------------------------------
    def _start_head(self) -> None:
        self._in_head, self._head_bytes = True, 0
        self._stop_timers()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _stop_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head_bytes == 0:
            self.transport.close()  # connected and sent nothing: no one to answer
            return
        self._refuse(408, "Request Timeout", f"the request head did not arrive within {self.header_timeout_s:g} s")

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if not self.transport.is_closing():
            log.warning("closing %s: its request body did not arrive in %g s", self.client, self.body_timeout_s)
            self.transport.close()

    def _refuse_too_large(self) -> None:
        self._refuse(
            431, "Request Header Fields Too Large", f"request heads are limited to {self.max_head_bytes:,} bytes"
        )

    def _refuse(self, status: int, reason: str, message: str) -> None:
        if self.transport.is_closing() or self._refused:
            return
        log.warning("HTTP %d to %s: %s", status, self.client, message)
        self._in_head, self._refused = False, True
        self._stop_timers()
        self.transport.write(_refusal(status, reason, message))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)
