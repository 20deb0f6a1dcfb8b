"""Unit tests of rooms, membership and presence bookkeeping (chatd.hub): no sockets."""

from chatd.hub import LOBBY, Hub


class Conn:
    """A stand-in session: the hub reads its ``user`` and its ``client`` (here the
    stand-in itself, so receivers and relays list it)."""

    def __init__(self, user):
        self.user = user
        self.client = self

    def __repr__(self):
        return f"Conn({self.user})"


def test_presence_counts_users_not_connections():
    """A user's first connection in a room joins the user, the last one leaves it."""
    hub = Hub()
    phone, web, bob = Conn("alice"), Conn("alice"), Conn("bob")
    for c in (phone, web, bob):
        hub.connect(c)
    assert hub.join(phone, "r") == (False, True)
    assert hub.join(web, "r") == (False, False)
    assert hub.join(bob, "r") == (False, True)
    assert hub.members("r") == ["alice", "bob"]
    assert hub.leave(phone, "r") is False
    assert hub.members("r") == ["alice", "bob"]
    assert hub.disconnect(web) == ["r"]
    assert hub.members("r") == ["bob"]
    assert hub.connections_of("alice") == [phone]


def test_pending_members_buffer_until_live():
    """A joiner is pending: room frames are buffered for it and handed back by go_live."""
    hub = Hub()
    a, b = Conn("a"), Conn("b")
    hub.connect(a)
    hub.connect(b)
    hub.join(a, "r")
    assert hub.go_live(a, "r") == []
    hub.join(b, "r")
    assert list(hub.receivers("r")) == [a]
    hub.buffer("r", 1, b"m1")
    hub.buffer("r", None, b"p", exclude=b)
    assert hub.go_live(b, "r") == [(1, b"m1")]
    assert list(hub.receivers("r")) == [a, b]
    assert hub.go_live(b, "r") is None  # not pending any more


def test_rejoin_makes_a_live_member_pending_again():
    """Joining a room again (a resume) buffers live frames until the replay is sent."""
    hub = Hub()
    a = Conn("a")
    hub.connect(a)
    hub.join(a, "r")
    hub.go_live(a, "r")
    assert hub.join(a, "r") == (True, False)
    assert list(hub.receivers("r")) == []
    hub.buffer("r", 5, b"x")
    assert hub.go_live(a, "r") == [(5, b"x")]


def test_relays_sit_in_the_lobby():
    """Relay connections are lobby members but never lobby receivers."""
    hub = Hub()
    r1, v = Conn("guest-1"), Conn("v")
    assert hub.connect_relay(r1) is True
    hub.connect(v)
    hub.join(v, LOBBY)
    hub.go_live(v, LOBBY)
    assert hub.members(LOBBY) == ["guest-1", "v"]
    assert list(hub.receivers(LOBBY)) == [v]
    assert list(hub.relays) == [r1]
    assert hub.disconnect(r1) == [LOBBY]
    assert hub.relays == {}


def test_empty_rooms_are_forgotten():
    """The last member leaving removes the room; disconnect leaves every room."""
    hub = Hub()
    a = Conn("a")
    hub.connect(a)
    for room in ("x", "y", "z"):
        hub.join(a, room)
    assert hub.rooms_of(a) == {"x", "y", "z"}
    assert hub.disconnect(a) == ["x", "y", "z"]
    assert hub.rooms == {} and hub.connections == {}
    assert not hub.in_room(a, "x")


def test_a_pending_buffer_past_its_limit_is_dropped():
    """Hub.buffer returns the pending connections whose buffer would pass the limit;
    they are pending no more and the others keep buffering."""
    hub = Hub()
    a, b = Conn("a"), Conn("b")
    for c in (a, b):
        hub.connect(c)
        hub.join(c, "r")
    assert hub.buffer("r", 1, b"x" * 60, limit=100) == []
    hub.go_live(b, "r")
    hub.join(b, "r")  # pending again, with an empty buffer
    assert hub.buffer("r", 2, b"y" * 60, limit=100) == [a]
    assert hub.go_live(a, "r") is None
    assert hub.go_live(b, "r") == [(2, b"y" * 60)]
    assert hub.rooms["r"].pending_bytes == {}


def test_is_pending_until_live():
    """is_pending: joined and not live yet; not for live members or strangers."""
    hub = Hub()
    a = Conn("a")
    hub.connect(a)
    assert hub.is_pending(a, "r") is False
    hub.join(a, "r")
    assert hub.is_pending(a, "r") is True
    hub.go_live(a, "r")
    assert hub.is_pending(a, "r") is False
