"""A relay on python ``websockets`` (asyncio), fanning out with ``broadcast()``.

Every message a client sends goes to every other open connection through
``websockets.broadcast``, which writes the frame without awaiting each peer
and skips peers that are not open.

Run: ``python3 bench/peers/websockets_broadcast.py PORT``
"""

import asyncio
import sys

from websockets.asyncio.server import broadcast, serve

CLIENTS = set()


async def handler(ws):
    """Register the connection and relay each of its messages to the others."""
    CLIENTS.add(ws)
    try:
        async for message in ws:
            broadcast([c for c in CLIENTS if c is not ws], message)
    finally:
        CLIENTS.discard(ws)


async def main(port):
    """Serve on 127.0.0.1:PORT until killed."""
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
        print(f"websockets_broadcast listening on {port}", flush=True)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
