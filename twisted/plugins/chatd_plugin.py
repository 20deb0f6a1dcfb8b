"""The twistd plugin: ``twistd -n chatd --port 8080``. It only points at chatd.tap."""

from twisted.application.service import ServiceMaker

chatd = ServiceMaker(
    "chatd",
    "chatd.tap",
    "A real-time chat server: the tutorial's WebSocket relay plus the chatd.v1 room protocol.",
    "chatd",
)
