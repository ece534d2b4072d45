"""The listening socket ``faceaudit serve`` binds (runner._bind), as asyncio serves it."""

from __future__ import annotations

import asyncio
import socket

from faceaudit.server import runner


def test_accepted_connections_have_nagle_off():
    """A response is written in two pieces (head, body); with Nagle on, the body waits for the
    client's delayed ACK of the head, ~40 ms on every request. asyncio turns it off only on
    sockets made with proto IPPROTO_TCP, which accepted sockets inherit from the listener."""
    async def accept_one() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport):  # type: ignore[override]
                sock = transport.get_extra_info("socket")
                seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        listener = runner._bind("127.0.0.1", 0)
        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        _, writer = await asyncio.open_connection("127.0.0.1", listener.getsockname()[1])
        try:
            return await asyncio.wait_for(seen, 10)
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(accept_one()) != 0
