"""The tutorial's Ratchet ``Chat`` component ported straight to Autobahn/Twisted.

A list of clients; every message is sent with ``sendMessage`` to each other
client, exactly as the PHP tutorial's ``onMessage`` loops over
``$this->clients``. One closing peer's exception is caught per peer so a
benchmark run is not cut short, but otherwise no optimisation: each
``sendMessage`` builds its own frame.

Run: ``python3 bench/peers/autobahn_tutorial.py PORT``
"""

import sys

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol


class Chat(WebSocketServerProtocol):
    """One client of the tutorial's chat."""

    def onOpen(self):
        self.factory.clients.append(self)

    def onMessage(self, payload, isBinary):
        for client in self.factory.clients:
            if client is not self:
                try:
                    client.sendMessage(payload, isBinary)
                except Exception:
                    pass

    def onClose(self, wasClean, code, reason):
        if self in self.factory.clients:
            self.factory.clients.remove(self)


def main():
    """Listen on 127.0.0.1:PORT and run the reactor."""
    from twisted.internet import reactor

    port = int(sys.argv[1])
    factory = WebSocketServerFactory(f"ws://127.0.0.1:{port}")
    factory.protocol = Chat
    factory.clients = []
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    print(f"autobahn_tutorial listening on {port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
