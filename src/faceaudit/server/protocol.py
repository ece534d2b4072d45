"""uvicorn's h11 HTTP protocol with the two limits it lacks: a header deadline and a connection cap.

uvicorn closes a connection that stays *silent* after a response
(``timeout_keep_alive``), but any byte cancels that timer, and nothing bounds
how long a client may take to finish its request line and headers
(slowloris), nor how many connections are open.  Both are per-connection
concerns the ASGI app never sees (it is called once the headers are complete),
so they live here:

* **header deadline**: from the moment a connection starts waiting for a
  request (accepted, or the previous response sent) the client has
  ``HEADER_TIMEOUT`` seconds to complete the request head, whatever it sends
  meanwhile; otherwise it gets ``408`` and the connection is closed.
* **connection cap**: at most ``max_connections()`` open connections per
  process, below the open-file limit so accepting never fails with EMFILE.
  asyncio accepts up to ``backlog`` sockets in one go before any of them
  reaches ``connection_made`` (and closes evicted ones a loop turn later), so
  the cap leaves room for a few such bursts; the server is started with
  ``backlog=ACCEPT_BURST`` (faceaudit.server.runner).
  When a new connection would exceed it, the connection that has waited
  longest for a request head is closed to make room (a slow or silent client
  loses its place to a new one, which is what keeps legitimate clients served
  during a slowloris flood); when every connection is busy with a request,
  the new one is closed instead.

The body's own timeouts are the app's (faceaudit.server.app), where ``receive()``
can be awaited with a deadline.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
import time
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

__all__ = ["ACCEPT_BURST", "HEADER_TIMEOUT", "GuardedH11Protocol", "connection_cap", "max_connections"]

HEADER_TIMEOUT = 10.0  # seconds to send a complete request head
# Descriptors kept free for the store, model files, logs and the listening socket.
RESERVED_FILES = 128
MAX_CONNECTIONS_CEILING = 4096
ACCEPT_BURST = 128  # listen backlog = sockets asyncio accepts per readiness event
_BURSTS_IN_FLIGHT = 4  # accepted-not-yet-counted plus evicted-not-yet-closed, measured
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\n"
                     b"content-length: 0\r\nconnection: close\r\n\r\n")
log = logging.getLogger("faceaudit.server")


def connection_cap(open_file_limit: int) -> int:
    """Open connections allowed under a given open-file limit."""
    spare = RESERVED_FILES + _BURSTS_IN_FLIGHT * ACCEPT_BURST
    return max(16, min(MAX_CONNECTIONS_CEILING, open_file_limit - spare))


@functools.lru_cache(maxsize=1)
def max_connections() -> int:
    """Open connections allowed in this process (its soft open-file limit, read once)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS_CEILING
    return connection_cap(soft)


class GuardedH11Protocol(H11Protocol):
    """H11Protocol plus a request-head deadline and a cap on open connections."""

    header_timeout: float = HEADER_TIMEOUT

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_timer: asyncio.TimerHandle | None = None
        self.waiting_since = time.monotonic()

    # -- waiting for a request head ---------------------------------------------------
    def _waiting_for_head(self) -> bool:
        return self.conn.their_state is h11.IDLE and not self.transport.is_closing()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self.waiting_since = time.monotonic()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._waiting_for_head():
            self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()

    # -- uvicorn's hooks ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()
        if len(self.connections) > max_connections():
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()  # the next request's head is due like the first one's

    def _make_room(self) -> None:
        """Close the connection that has waited longest for a request head (maybe this one)."""
        victim: GuardedH11Protocol | None = None
        for other in self.connections:
            if (other is not self and isinstance(other, GuardedH11Protocol)
                    and other._waiting_for_head()
                    and (victim is None or other.waiting_since < victim.waiting_since)):
                victim = other
        if victim is None:  # everyone else is mid-request: the newcomer is turned away
            victim = self
        else:
            victim.transport.write(_TIMEOUT_RESPONSE)
        victim.transport.close()
        victim.connections.discard(victim)  # counted out now; connection_lost follows
