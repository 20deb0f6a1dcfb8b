"""chatd: a real-time chat and instant-messaging server on Twisted and Autobahn."""

__version__ = "0.1.0"
