"""The tutorial's relay on Autobahn with the frame built once per message.

Like ``autobahn_tutorial.py`` but ``onMessage`` calls
``factory.prepareMessage`` once and ``sendPreparedMessage`` for every other
client (Autobahn's ``BroadcastPreparedServerFactory`` pattern), isolating each
peer's failure.

Run: ``python3 bench/peers/autobahn_prepared.py PORT``
"""

import sys

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol


class PreparedChat(WebSocketServerProtocol):
    """One client; relays by sending one prepared frame to each other client."""

    def onOpen(self):
        self.factory.clients.append(self)

    def onMessage(self, payload, isBinary):
        msg = self.factory.prepareMessage(payload, isBinary)
        for client in self.factory.clients:
            if client is not self:
                try:
                    client.sendPreparedMessage(msg)
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
    factory.protocol = PreparedChat
    factory.clients = []
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    print(f"autobahn_prepared listening on {port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
