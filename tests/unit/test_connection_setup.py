"""Connection setup order: ``welcome`` only once the user is known and its name is
claimed (docs/protocol.md, *Server → client on open*, *Names*).

The realm on a task.Clock with the real MemoryStore and LocalDirectory; the two
seams a cluster makes slow are held with Deferreds the test fires: the store's
``add_user`` write (the known-user record) and the directory's name claim.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from chatd.anonymous import AnonymousNames, AnonymousSession, epoch_of
from chatd.chat import CLAIM_RETRIES
from chatd.cluster.presence import CLAIMED, SUPERSEDED, TAKEN, LocalDirectory
from chatd.service import build_chat
from chatd.session import CLOSED, LIVE, OPENING
from chatd.settings import Settings
from chatd.store.memory import MemoryStore
from tests.support.realm import Fanout, opened, say, token_user


class HeldWrites(MemoryStore):
    """A MemoryStore whose ``add_user`` writes take effect only when released."""

    def __init__(self):
        super().__init__()
        self.held: list = []

    def add_user(self, user, name, ts):
        d = Deferred()
        self.held.append((d, user, name, ts))
        return d

    def release(self):
        held, self.held = self.held, []
        for d, user, name, ts in held:
            MemoryStore.add_user(self, user, name, ts)
            d.callback(None)


class ClusterClaims(LocalDirectory):
    """The local directory, with every name claim answered by the test (as a
    cluster's directory answers from Redis): ``asks`` holds the pending ones,
    ``epochs`` the epoch of each claim."""

    cluster_wide = True

    def __init__(self):
        super().__init__()
        self.asks: list = []
        self.epochs: list = []

    def connected(self, conn, epoch):
        d = Deferred()
        self.asks.append((conn.user, d))
        self.epochs.append(epoch)
        return d

    def answer(self, result):
        (_user, d) = self.asks.pop(0)
        d.callback(result)


def chat_on(clock, store=None, directory=None):
    return build_chat(
        store if store is not None else MemoryStore(),
        Fanout(),
        Settings(),
        clock,
        directory=directory,
    )


def kinds(conn):
    return [f["type"] for f in conn.json()]


# the known-user record


def test_welcome_waits_for_the_user_record_then_create_naming_it_succeeds(clock):
    """bob's ``add_user`` write is held: no ``welcome`` yet, and his frames wait. Once
    it is stored he gets ``welcome`` (then his held ping runs), and alice's ``create
    {members: [bob]}`` and ``dm`` to him succeed: no ``no_such_user``."""
    store = HeldWrites()
    chat = chat_on(clock, store)
    alice = token_user(chat, "alice")
    store.release()
    assert kinds(alice) == ["welcome"]
    bob = token_user(chat, "bob")
    say(chat, bob, type="ping", id="p1")
    assert bob.json() == [] and bob.session.state is OPENING
    assert [u for _d, u, _n, _t in store.held] == ["bob"]
    store.release()
    assert kinds(bob) == ["welcome", "pong"]
    assert bob.session.state is LIVE
    say(chat, alice, type="create", room="team", kind="private", members=["bob"], id="c1")
    say(chat, alice, type="dm", to="bob", text="hi", id="d1")
    assert alice.of("error") == []
    assert [f["id"] for f in alice.of("ack")] == ["c1", "d1"]
    assert [e["kind"] for e in bob.of("event")] == ["invited"]
    assert [d["text"] for d in bob.of("dm")] == ["hi"]


def test_a_user_not_yet_recorded_is_refused_before_its_welcome(clock):
    """The other side of the order: while bob's record is held (no welcome sent), a
    ``create`` naming him is refused, so a client can only have seen bob's
    ``welcome`` once requests naming him succeed."""
    store = HeldWrites()
    chat = chat_on(clock, store)
    alice = token_user(chat, "alice")
    store.release()
    bob = token_user(chat, "bob")
    say(chat, alice, type="create", room="team", kind="private", members=["bob"], id="c1")
    assert [(e["code"], e["ref"]) for e in alice.of("error")] == [("no_such_user", "c1")]
    assert bob.json() == []


def test_a_connection_closed_before_its_record_is_stored_gets_nothing(clock):
    """bob closes while his record is held: no welcome, nothing admitted when it lands."""
    store = HeldWrites()
    chat = chat_on(clock, store)
    bob = token_user(chat, "bob")
    chat.close(bob.session)
    store.release()
    assert bob.json() == [] and bob.session.state is CLOSED
    assert not chat.hub.is_online("bob")


def test_a_user_recorded_before_is_welcomed_without_waiting_for_the_store(clock):
    """bob's first connection waits for his record; once stored, his later
    connections (a reconnect, a second device) are welcomed at once with no write at
    all: a record of a user is never undone. A connection opened while the first
    record is still held waits too (and writes again: idempotent)."""
    store = HeldWrites()
    chat = chat_on(clock, store)
    first = token_user(chat, "bob")
    early = token_user(chat, "bob")
    assert first.json() == [] and early.json() == []
    assert [u for _d, u, _n, _t in store.held] == ["bob", "bob"]
    store.release()
    assert kinds(first) == ["welcome"] and kinds(early) == ["welcome"]
    chat.close(first.session)
    again = token_user(chat, "bob")
    assert kinds(again) == ["welcome"] and store.held == []
    assert token_user(chat, "carol").json() == []  # another user still waits
    assert [u for _d, u, _n, _t in store.held] == ["carol"]


def test_a_failed_record_is_written_again_at_the_next_connection(clock):
    """bob's record fails (the store is down): he is welcomed (the failure is logged),
    but not remembered as recorded, so his next connection writes it again."""
    store = HeldWrites()
    chat = chat_on(clock, store)
    bob = token_user(chat, "bob")
    ((d, _u, _n, _t),) = store.held
    store.held = []
    d.errback(RuntimeError("store down"))
    assert kinds(bob) == ["welcome"]
    again = token_user(chat, "bob")
    assert again.json() == [] and [u for _d, u, _n, _t in store.held] == ["bob"]
    store.release()
    assert kinds(again) == ["welcome"]


# the cluster's name claim


def test_welcome_waits_for_the_cluster_name_claim(clock):
    """An anonymous name the cluster has not confirmed: no ``welcome``, frames held;
    CLAIMED sends ``welcome``, then runs them in order."""
    directory = ClusterClaims()
    chat = chat_on(clock, directory=directory)
    bob = opened(chat, "bob")
    say(chat, bob, type="ping", id="p1")
    say(chat, bob, type="ping", id="p2")
    assert bob.json() == []
    directory.answer(CLAIMED)
    assert kinds(bob) == ["welcome", "pong", "pong"]
    assert [f["id"] for f in bob.of("pong")] == ["p1", "p2"]


def test_a_token_user_waits_for_both_claim_and_record(clock):
    """A token user on a cluster: the claim answered first, the record second (and the
    other way round): ``welcome`` comes only after the later of the two."""
    store, directory = HeldWrites(), ClusterClaims()
    chat = chat_on(clock, store, directory)
    bob = token_user(chat, "bob")
    directory.answer(CLAIMED)
    assert bob.json() == []
    store.release()
    assert kinds(bob) == ["welcome"]
    carol = token_user(chat, "carol")
    store.release()
    assert carol.json() == []
    directory.answer(CLAIMED)
    assert kinds(carol) == ["welcome"]


def test_a_name_held_on_another_node_is_asked_again_while_its_holder_closes(clock):
    """TAKEN (bob's previous connection on another node is not closed there yet): the
    claim is asked again after CLAIM_RETRIES[0] s; CLAIMED then: ``welcome``, no
    ``name_taken``, the held frame runs."""
    directory = ClusterClaims()
    chat = chat_on(clock, directory=directory)
    bob = opened(chat, "bob")
    say(chat, bob, type="ping", id="p1")
    directory.answer(TAKEN)
    assert directory.asks == [] and bob.json() == []
    clock.advance(CLAIM_RETRIES[0])
    assert [u for u, _d in directory.asks] == ["bob"]
    directory.answer(CLAIMED)
    assert kinds(bob) == ["welcome", "pong"]
    assert bob.closed is None


def test_a_name_held_on_another_node_for_good_is_refused(clock):
    """TAKEN on every ask: after the last retry ``name_taken`` and close 4409, no
    ``welcome``, and the held frames never run."""
    directory = ClusterClaims()
    chat = chat_on(clock, directory=directory)
    mallory = opened(chat, "alice")
    say(chat, mallory, type="join", room="r", id="j1")
    for delay in CLAIM_RETRIES:
        directory.answer(TAKEN)
        clock.advance(delay)
    directory.answer(TAKEN)
    assert directory.asks == []
    assert [(f["type"], f.get("code")) for f in mallory.json()] == [("error", "name_taken")]
    assert mallory.closed[0] == 4409
    assert "r" not in chat.hub.rooms


def test_a_connection_closed_while_its_name_is_asked_again_is_not_asked_more(clock):
    directory = ClusterClaims()
    chat = chat_on(clock, directory=directory)
    bob = opened(chat, "bob")
    directory.answer(TAKEN)
    chat.close(bob.session)
    clock.advance(sum(CLAIM_RETRIES))
    assert directory.asks == [] and bob.json() == []


# a resume secret this node never saw (cluster mode: another node's session)


def test_a_secret_from_another_node_is_claimed_as_that_session(clock):
    """alice's session lives on another node; she reconnects here with its secret
    while the old connection still looks alive there: the claim carries the epoch of
    that secret (the same as the other node's), and CLAIMED welcomes her with the
    same secret: she keeps her name and session."""
    directory = ClusterClaims()
    chat = chat_on(clock, directory=directory)
    there = AnonymousSession("alice", "s3cret-from-node-a")  # as node A made it
    alice = opened(chat, "alice", resume=there.secret)
    assert directory.epochs == [there.epoch]
    directory.answer(CLAIMED)
    (welcome,) = alice.of("welcome")
    assert welcome["resume"] == there.secret and welcome["name"] == "alice"


def test_a_secret_from_another_node_superseded_owns_nothing(clock):
    """The secret's session is not the one that last held the name (someone else
    held it meanwhile): SUPERSEDED welcomes the connection as a session owning
    nothing; TAKEN (another session holds it) refuses it with name_taken."""
    directory = ClusterClaims()
    chat = chat_on(clock, directory=directory)
    alice = opened(chat, "alice", resume="s3cret-from-node-a")
    directory.answer(SUPERSEDED)
    assert kinds(alice) == ["welcome"]
    assert alice.session.anonymous.floors == {}
    mallory = opened(chat, "bob", resume="guessed-secret-xx")
    for delay in CLAIM_RETRIES:
        directory.answer(TAKEN)
        clock.advance(delay)
    directory.answer(TAKEN)
    assert [f.get("code") for f in mallory.json()] == ["name_taken"]


def test_without_a_cluster_an_unknown_secret_gets_a_new_one(clock):
    """One node alone knows every session: a secret it does not know resumes
    nothing, and the new session gets a new secret (not the one given)."""
    chat = chat_on(clock)
    alice = opened(chat, "alice", resume="s3cret-from-nowhere")
    (welcome,) = alice.of("welcome")
    assert welcome["resume"] != "s3cret-from-nowhere"


def test_names_adopt_only_well_formed_secrets():
    """AnonymousNames.claim with adopt: a well-formed unknown secret becomes the
    session's (its epoch is the secret's, as on every node); anything else (too
    short, too long, other characters) gets a new secret; a live session's name
    still needs its own secret."""
    names = AnonymousNames()
    s = names.claim("alice", "A" * 16, 0.0, adopt=True)
    assert s.secret == "A" * 16 and s.epoch == epoch_of("A" * 16)
    assert names.claim("alice", "B" * 16, 0.0, adopt=True) is None  # held here
    for bad in ("short", "x" * 65, "has spaces in it!!", "ünïcödé-secret-xx"):
        other = names.claim("n" + str(len(bad)), bad, 0.0, adopt=True)
        assert other.secret != bad and len(other.secret) == 16
    assert epoch_of("A" * 16) != epoch_of("B" * 16)
