"""The twisted.web resource tree (the tutorial's HttpServer layer).

``/`` and ``/ws`` upgrade to WebSocket (the tutorial's client connects to
``ws://host:8080``, i.e. ``/``); a plain GET of ``/`` serves the web client,
whose assets live under ``/static/``. ``/healthz`` answers whether the process
is up.
"""

from __future__ import annotations

import json
from pathlib import Path

from autobahn.twisted.resource import WebSocketResource
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import File

from chatd.api import ApiResource
from chatd.httpserver import MAX_BODY, BodyRules, ChatSite
from chatd.login import MAX_LOGIN_BODY, error_body
from chatd.media.web import media_children
from chatd.pushweb import push_children

STATIC = Path(__file__).parent / "static"


def _is_upgrade(request) -> bool:
    upgrade = request.getHeader(b"upgrade")
    return upgrade is not None and upgrade.lower() == b"websocket"


class UpgradeOrPage(Resource):
    """WebSocket when the request asks for an upgrade, the web client otherwise."""

    isLeaf = True

    def __init__(self, websocket: Resource, page: Resource):
        super().__init__()
        self.websocket = websocket
        self.page = page

    def render(self, request):
        if _is_upgrade(request):
            return self.websocket.render(request)
        return self.page.render(request)


class StaticFiles(File):
    """A directory of files; a path segment that cannot name a file is a plain 404.

    twisted.web's ``File`` answers a NUL byte (``/static/%00``) with a 500 and a
    logged traceback, and logs an error for a segment that is not UTF-8.
    """

    def getChild(self, path, request):
        if b"\x00" in path:
            return self.childNotFound
        try:
            path.decode("utf-8")
        except UnicodeDecodeError:
            return self.childNotFound
        return super().getChild(path, request)


class Health(Resource):
    """``GET /healthz``: 200 and a small JSON body while the process serves."""

    isLeaf = True

    def __init__(self, factory):
        super().__init__()
        self.factory = factory

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        body = {"status": "ok", "connections": len(self.factory.connections)}
        return json.dumps(body).encode()


def build_site(factory, children=None, login=None, media=None, verifier=None, parts=()) -> ChatSite:
    """The Site serving everything for *factory* (a :class:`chatd.factory.ChatFactory`).

    *children* adds resources to the root (``makeService`` gives ``/readyz``,
    ``/metrics``, ``/api`` and ``/admin``); *login* is ``/api/login``
    (:func:`chatd.login.login_resources`), which needs no API key; *media* is the
    :class:`chatd.media.web.Media` service behind ``/api/media`` and ``/media/``;
    with a token *verifier*, ``/api/push/subscriptions`` (chatd/pushweb.py); each
    of *parts* is called with the root resource and the body rules to add its own
    (e.g. chatd.wechatpush's ``/api/wechat/events``).
    """
    websocket = WebSocketResource(factory)
    root = Resource()
    root.putChild(b"", UpgradeOrPage(websocket, File(str(STATIC / "index.html"))))
    root.putChild(b"ws", websocket)
    root.putChild(b"static", StaticFiles(str(STATIC)))
    root.putChild(b"healthz", Health(factory))
    for name, resource in (children or {}).items():
        root.putChild(name, resource)
    rules = BodyRules(MAX_BODY)
    api = root.children.get(b"api")
    if isinstance(api, ApiResource):
        # the API key is checked from the headers, before any body byte is read
        rules.add(b"/api/", MAX_BODY, api.precheck)
    if login is not None:
        if api is None:
            api = Resource()
            root.putChild(b"api", api)
        api.putChild(b"login", login)  # /api/login/wechat needs no API key
        rules.add(b"/api/login/", MAX_LOGIN_BODY, error_body=error_body)
    if media is not None:
        media_children(media, root, rules)  # /media/ID and /api/media (chatd/media/web.py)
    if verifier is not None:
        push_children(factory.chat, verifier, root, rules)  # Bearer token, no API key
    for add in parts:
        add(root, rules)
    settings = factory.settings
    # a whole HTTP request (or upgrade request) must arrive within the handshake
    # timeout, counted from accept however slowly it trickles in (chatd/httpserver.py);
    # the Site's idle timeout is the same; an upgraded WebSocket is subject to neither
    site = ChatSite(
        root,
        gate=factory.gate,
        deadline=lambda: settings.open_handshake_timeout,
        body_rules=rules,
        timeout=settings.open_handshake_timeout,
    )
    site.noisy = False
    return site


def build_metrics_site(factory, children) -> Site:
    """The Site of ``--metrics-listen``: ``/healthz`` and *children* (``/metrics``,
    ``/readyz``) only."""
    root = Resource()
    root.putChild(b"healthz", Health(factory))
    for name, resource in children.items():
        root.putChild(name, resource)
    site = Site(root)
    site.noisy = False
    return site
