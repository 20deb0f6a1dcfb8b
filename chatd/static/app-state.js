/*
 * chatd web client, state: the conversations the page shows, built from the
 * events of the shared chatd.v1 client (static/chatd-client.js, the same file
 * as the mini-program's utils/chatd.js). No DOM in here: the view
 * (static/app-view.js) is told what changed through the `view` hooks.
 *
 * The shared client owns the connection: reconnect with backoff, heartbeat,
 * the outbox (client ids, resend after a reconnect, rate-limit pacing), rejoin
 * with `since`, the resume secret and their persistence in sessionStorage. This
 * file only keeps what the page needs on top: message rows per conversation,
 * presence notes, unread counts, typing and the sidebar order.
 */
(function () {
  "use strict";

  var TYPING_SEND_EVERY_MS = 2000;
  var TYPING_SHOW_MS = 3000;
  var HISTORY_PAGE = 50;
  var NAME_RE = /^[\p{L}\p{N}_.-]{1,32}$/u;
  var ROOM_RE = /^[\p{L}\p{N}_.:#-]{1,64}$/u;
  // Why a message was refused, for the "Not sent: …" line.
  var FAILED = {
    too_large: function (s) {
      return "Too long (max " + s.maxText + " characters)";
    },
    no_such_user: "Not delivered: the user is offline",
    not_in_room: "Not delivered: you are not in this room",
    forbidden: "Not delivered: you may not post in this room",
  };

  function roomKey(room) {
    return "room:" + room;
  }
  function dmKey(user) {
    return "dm:" + user;
  }

  function store(key, value) {
    try {
      if (value == null) window.localStorage.removeItem(key);
      else window.localStorage.setItem(key, JSON.stringify(value));
    } catch (e) {
      /* storage may be disabled; the client works without it */
    }
  }

  function sessionStorage() {
    try {
      return window.sessionStorage;
    } catch (e) {
      return null; // storage disabled: the client then keeps nothing
    }
  }

  function load(key) {
    try {
      var v = window.localStorage.getItem(key);
      return v == null ? null : JSON.parse(v);
    } catch (e) {
      return null;
    }
  }

  /**
   * The page's state. `view` gets told about changes: changed(conv, opts),
   * sidebar(), conn(), welcomed(first), signedOut(text), joinError(text),
   * toast(text), typing(conv), page(conv, apply), watching(conv).
   */
  function create(view, options) {
    var opts = options || {};
    var Chatd = opts.ChatdClient || window.ChatdClient;
    var state = {
      name: null, // name asked for
      user: null, // user id from welcome
      welcomed: false, // got a welcome since the last sign-in (reconnects keep it)
      client: null, // the shared ChatClient of this sign-in
      conn: "idle", // idle | connecting | open | waiting
      reconnectAt: 0,
      nameBusy: false,
      maxText: 4000,
      convs: new Map(), // key -> conversation
      order: [], // room keys in sidebar order
      dmOrder: [],
      active: null,
      pending: new Map(), // client id -> pending row (the client's outbox entries)
      lastTypingSent: new Map(), // room -> ms
      signedOut: true,
    };

    // ------------------------------------------------------- conversations
    function getConv(key, create_) {
      var c = state.convs.get(key);
      if (!c && create_) {
        var isRoom = key.indexOf("room:") === 0;
        c = {
          key: key,
          kind: isRoom ? "room" : "dm",
          id: key.slice(isRoom ? 5 : 3),
          msgs: new Map(), // seq -> row
          pending: [], // rows without seq, in send order
          notes: [], // presence notes {afterSeq, n, text}
          lastSeq: 0,
          oldestSeq: null,
          more: false,
          loadingOlder: false,
          loaded: false, // first page of history fetched
          unread: 0,
          members: new Set(),
          typing: new Map(), // user -> expiry ms
          joined: false,
          els: new Map(), // the view's render cache: row key -> element
        };
        state.convs.set(key, c);
        if (isRoom) state.order.push(key);
        else state.dmOrder.push(key);
      }
      return c;
    }

    function convOf(entry) {
      return getConv(entry.kind === "room" ? roomKey(entry.room) : dmKey(entry.to), true);
    }

    function persist() {
      if (!state.name) return;
      store("chatd.name", state.name);
      store("chatd.rooms." + state.name, state.order.map(function (k) {
        return state.convs.get(k).id;
      }));
      store("chatd.dms." + state.name, state.dmOrder.map(function (k) {
        return state.convs.get(k).id;
      }));
    }

    function resetRows(conv) {
      conv.msgs.clear();
      conv.els.clear();
      conv.notes = [];
      conv.oldestSeq = null;
    }

    // Adds a stored message (message/history/replay/dm) to its conversation.
    // Returns true when it was new.
    function addMessage(conv, m, live) {
      if (typeof m.seq !== "number") return false;
      if (conv.msgs.has(m.seq)) return false;
      // One of our own rows still pending (its ack is on the way): it settles then.
      if (m.from === state.user && m.id && state.pending.has(m.id)) return false;
      var row = {
        seq: m.seq,
        from: m.from,
        name: m.name || m.from,
        text: String(m.text),
        ts: m.ts,
        id: m.id == null ? null : m.id,
        status: "sent",
      };
      conv.msgs.set(m.seq, row);
      if (m.seq > conv.lastSeq) conv.lastSeq = m.seq;
      if (conv.oldestSeq == null || m.seq < conv.oldestSeq) conv.oldestSeq = m.seq;
      if (live && row.from !== state.user) {
        conv.typing.delete(row.from);
        if (!view.watching(conv)) conv.unread += 1;
      }
      return true;
    }

    function addNote(conv, text) {
      conv.noteCounter = (conv.noteCounter || 0) + 1;
      conv.notes.push({ afterSeq: conv.lastSeq, n: conv.noteCounter, text: text, ts: Date.now() });
      if (conv.notes.length > 200) conv.notes.shift();
    }

    // A pending row for outbox entry `entry` of the shared client.
    function addPending(entry) {
      var conv = convOf(entry);
      var row = {
        seq: null,
        from: state.user || state.name,
        name: state.name,
        text: entry.text,
        ts: entry.ts || Date.now(),
        id: entry.id,
        status: "pending",
        entry: entry,
        convKey: conv.key,
      };
      conv.pending.push(row);
      state.pending.set(entry.id, row);
      return conv;
    }

    // An ack (or a replayed own message) moves a pending row to its seq.
    function settle(entry) {
      var row = state.pending.get(entry.id);
      if (!row) return;
      state.pending.delete(entry.id);
      var conv = getConv(row.convKey, false);
      if (!conv) return;
      var i = conv.pending.indexOf(row);
      if (i >= 0) conv.pending.splice(i, 1);
      var seq = entry.seq;
      if (!conv.msgs.has(seq)) {
        // Reuse the pending element so it only changes state, not place.
        var cached = conv.els.get("p" + row.id);
        if (cached) conv.els.set("s" + seq, cached);
        row.seq = seq;
        row.ts = entry.ts;
        row.status = "sent";
        row.from = state.user;
        conv.msgs.set(seq, row);
      }
      if (seq > conv.lastSeq) conv.lastSeq = seq;
      if (conv.oldestSeq == null || seq < conv.oldestSeq) conv.oldestSeq = seq;
      view.changed(conv);
    }

    function failPending(entry) {
      var row = state.pending.get(entry.id);
      if (!row) return;
      state.pending.delete(entry.id);
      var why = FAILED[entry.error];
      row.status = "failed";
      row.entry = entry;
      row.error = typeof why === "function" ? why(state) : why || entry.error;
      var conv = getConv(row.convKey, false);
      if (conv) view.changed(conv);
    }

    // ------------------------------------------------------------ actions
    function send(conv, text) {
      var entry =
        conv.kind === "room" ? state.client.send(conv.id, text) : state.client.dm(conv.id, text);
      addPending(entry);
      view.changed(conv, { stick: true });
    }

    function retry(row) {
      var conv = getConv(row.convKey, false);
      if (!conv || row.status !== "failed") return;
      // The same id: if the first try did reach the server it answers with
      // the original ack instead of storing the message twice.
      state.client.retry(row.entry);
      row.status = "pending";
      row.error = null;
      state.pending.set(row.id, row);
      var i = conv.pending.indexOf(row);
      if (i >= 0) conv.pending.splice(i, 1);
      conv.pending.push(row);
      view.changed(conv, { stick: true });
    }

    function discard(row) {
      var conv = getConv(row.convKey, false);
      if (!conv) return;
      var i = conv.pending.indexOf(row);
      if (i >= 0) conv.pending.splice(i, 1);
      view.changed(conv);
    }

    function typing(conv) {
      if (conv.kind !== "room" || !conv.joined) return;
      var now = Date.now();
      var last = state.lastTypingSent.get(conv.id) || 0;
      if (now - last < TYPING_SEND_EVERY_MS) return;
      state.client.typing(conv.id);
      state.lastTypingSent.set(conv.id, now);
    }

    function requestOlder(conv) {
      if (conv.loadingOlder || !state.client) return;
      var before = conv.oldestSeq;
      if (before == null) before = conv.lastSeq + 1;
      if (before <= 1 && conv.loaded) return;
      var page = { limit: HISTORY_PAGE };
      if (before > 0 && (conv.loaded || conv.kind === "room")) page.before = before;
      fetchPage(conv, page);
    }

    function fetchPage(conv, page) {
      var client = state.client;
      var p = conv.kind === "room" ? client.history(conv.id, page) : client.dmHistory(conv.id, page);
      conv.loadingOlder = true;
      view.changed(conv);
      p.then(
        function (f) {
          if (state.client !== client || state.convs.get(conv.key) !== conv) return;
          view.page(conv, function () {
            (f.messages || []).forEach(function (m) {
              addMessage(conv, m, false);
            });
            conv.more = !!f.more;
            conv.loadingOlder = false;
            conv.loaded = true;
          });
        },
        function (e) {
          if (state.client !== client) return;
          conv.loadingOlder = false;
          view.changed(conv);
          if (e.code === "no_such_user") view.toast(e.message || "That user is offline.");
          else if (e.code) view.toast(e.message || "Error: " + e.code);
        }
      );
    }

    function joinRoom(room) {
      var key = roomKey(room);
      var existed = state.convs.has(key);
      getConv(key, true);
      join(room);
      if (!existed) persist();
      view.sidebar();
      return key;
    }

    function join(room) {
      var client = state.client;
      client.join(room).catch(function (e) {
        if (state.client !== client || !e.code) return;
        var conv = getConv(roomKey(room), false);
        if (conv) closeConv(conv);
        if (e.code === "bad_room") view.joinError("That room name is not allowed.");
        else view.toast(e.message || "Could not join " + room + ": " + e.code);
      });
    }

    function closeConv(conv) {
      if (conv.kind === "room") state.client.leave(conv.id);
      conv.pending.forEach(function (row) {
        state.pending.delete(row.id);
      });
      state.convs.delete(conv.key);
      var list = conv.kind === "room" ? state.order : state.dmOrder;
      var i = list.indexOf(conv.key);
      if (i >= 0) list.splice(i, 1);
      persist();
      var next = null;
      if (state.active === conv.key) {
        next = state.order[Math.max(0, i - 1)] || state.order[0] || state.dmOrder[0] || null;
      }
      view.sidebar();
      return next;
    }

    function openDm(user) {
      var key = dmKey(user);
      var existed = state.convs.has(key);
      var conv = getConv(key, true);
      if (!existed) {
        persist();
        if (state.conn === "open") requestOlder(conv);
      }
      return key;
    }

    function setActive(key) {
      state.active = key;
      var conv = key && getConv(key, false);
      if (conv) conv.unread = 0;
      return conv;
    }

    // ------------------------------------------------- shared client events
    var on = {
      status: function (s) {
        if (s.state === "open") {
          setConn("open");
        } else if (s.state === "connecting" || (s.state === "reconnecting" && s.delay === undefined)) {
          offline();
          setConn("connecting");
        } else if (s.state === "reconnecting") {
          offline();
          state.reconnectAt = Date.now() + s.delay;
          state.nameBusy = s.code === 4409;
          setConn("waiting");
        } else if (s.state === "closed") {
          offline();
          if (state.signedOut) return;
          if (s.reason === "name_taken" || s.reason === "bad_name") {
            signOut(
              s.reason === "bad_name"
                ? "That name is not allowed. Use 1–32 letters, digits, _ - or ., not starting with guest-."
                : "The name “" + state.name + "” is already taken. Pick another one."
            );
          } else {
            setConn("idle");
          }
        }
      },

      welcome: function (f) {
        var first = !state.welcomed;
        state.user = f.user;
        state.name = f.name || f.user;
        state.welcomed = true;
        if (typeof f.max_text_length === "number") state.maxText = f.max_text_length;
        if (first) persist(); // the name and rooms for the next visit
        state.pending.forEach(function (row) {
          row.from = f.user;
        });
        // The client rejoins every room and catches up on DMs it has seen;
        // a DM conversation with no page yet gets its newest one.
        state.convs.forEach(function (conv) {
          if (conv.kind === "dm" && !conv.loaded) requestOlder(conv);
        });
        view.welcomed(first);
      },

      joined: function (f) {
        var conv = getConv(roomKey(f.room), false);
        if (!conv) return;
        var wasLoaded = conv.loaded;
        conv.joined = true;
        conv.members = new Set(f.members || []);
        if (wasLoaded && typeof f.seq === "number" && f.seq < conv.lastSeq) {
          // The server's history went backwards (it restarted without a durable
          // store): our seqs mean nothing now, start over from its view.
          resetRows(conv);
          conv.lastSeq = 0;
          conv.loaded = false;
          wasLoaded = false;
          addNote(conv, "The server's history was reset.");
        }
        if (f.truncated) {
          // More were missed than the server replays: drop the gap, page back later.
          resetRows(conv);
          conv.more = true;
        }
        if (!wasLoaded) {
          // The first page: what came before the live stream (a plain join) or
          // before the replay (a join with `since` after a reload).
          var upTo = f.since == null || f.truncated ? f.seq : Math.min(f.seq, f.since);
          if (upTo > conv.lastSeq && f.since == null) conv.lastSeq = upTo;
          if (upTo > 0) {
            fetchPage(conv, { before: upTo + 1, limit: HISTORY_PAGE });
          } else {
            conv.more = false;
            conv.loaded = true;
          }
        }
        view.changed(conv);
        view.sidebar();
      },

      presence: function (f) {
        var conv = getConv(roomKey(f.room), false);
        if (!conv) return;
        if (f.event === "join") {
          if (!conv.members.has(f.user)) addNote(conv, f.user + " joined");
        } else if (f.event === "leave") {
          if (conv.members.has(f.user)) addNote(conv, f.user + " left");
          conv.typing.delete(f.user);
        }
        conv.members = new Set(f.members);
        view.changed(conv);
      },

      message: function (f) {
        var conv = getConv(roomKey(f.room), false);
        if (conv && addMessage(conv, f, true)) view.changed(conv);
      },

      dm: function (f) {
        var key = dmKey(f.peer);
        var existed = state.convs.has(key);
        var conv = getConv(key, true);
        if (!existed) {
          persist();
          // Load what came before this message too.
          conv.loaded = true;
          conv.more = f.seq > 1;
          view.sidebar();
        }
        if (addMessage(conv, f, true)) view.changed(conv);
      },

      ack: settle,
      failed: failPending,

      typing: function (f) {
        var conv = getConv(roomKey(f.room), false);
        if (!conv) return;
        conv.typing.set(f.from, Date.now() + TYPING_SHOW_MS);
        view.typing(conv);
      },

      error: function (f) {
        // Errors about a request of ours (a join, a page, a message) are
        // answered through it, the client paces itself after rate_limited,
        // and name errors close the connection (status).
        if (f.ref || f.code === "rate_limited" || f.code === "name_taken" || f.code === "bad_name") return;
        view.toast(f.message || "Error: " + f.code);
      },
    };

    function offline() {
      state.convs.forEach(function (c) {
        c.joined = false;
        c.loadingOlder = false;
        c.typing.clear();
      });
    }

    function setConn(s) {
      state.conn = s;
      view.conn();
    }

    // ------------------------------------------------------------ session
    function connectUrl() {
      var u = new URL("ws", window.location.href);
      u.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
      u.search = "";
      u.hash = "";
      return u.href;
    }

    function signIn(name, room) {
      var old = state.client;
      state.client = null; // its last events are not ours any more
      if (old) old.close();
      state.name = name;
      state.user = null;
      state.signedOut = false;
      state.welcomed = false;
      state.convs.clear();
      state.order = [];
      state.dmOrder = [];
      state.pending.clear();
      state.active = null;
      var client = new Chatd.ChatClient({
        url: connectUrl(),
        name: name,
        // sessionStorage: the session (outbox, seqs, resume secret) survives
        // a reload of this tab, but a second tab does not inherit the resume
        // secret and so cannot take the name of the first
        adapter: opts.adapter || Chatd.browserAdapter(window, { storage: sessionStorage() }),
        storageKey: "chatd.session." + name,
        idPrefix: "c-",
      });
      state.client = client;
      var rooms = load("chatd.rooms." + name) || [];
      if (room && rooms.indexOf(room) < 0) rooms.unshift(room);
      client.rooms.forEach(function (r, saved) {
        if (rooms.indexOf(saved) < 0) rooms.push(saved);
      });
      rooms.forEach(function (r) {
        if (typeof r === "string" && ROOM_RE.test(r)) getConv(roomKey(r), true);
      });
      (load("chatd.dms." + name) || []).forEach(function (u) {
        if (typeof u === "string" && u !== name) getConv(dmKey(u), true);
      });
      // Messages queued before a reload are still in the client's outbox.
      client.outbox.forEach(addPending);
      Object.keys(on).forEach(function (type) {
        client.on(type, function (e) {
          if (state.client === client) on[type](e);
        });
      });
      state.order.forEach(function (key) {
        join(state.convs.get(key).id);
      });
      state.active = room ? roomKey(room) : state.order[0] || state.dmOrder[0] || null;
      client.connect();
    }

    function signOut(errorText) {
      state.signedOut = true;
      var client = state.client;
      state.client = null;
      if (client) client.close();
      state.welcomed = false;
      offline();
      setConn("idle");
      view.signedOut(errorText || "");
    }

    // Skips the backoff wait (the network came back, the user asked for it).
    function reconnectNow() {
      if (state.client && !state.signedOut) state.client.resume();
    }

    return {
      state: state,
      NAME_RE: NAME_RE,
      ROOM_RE: ROOM_RE,
      getConv: getConv,
      signIn: signIn,
      signOut: signOut,
      reconnectNow: reconnectNow,
      send: send,
      retry: retry,
      discard: discard,
      typing: typing,
      requestOlder: requestOlder,
      joinRoom: joinRoom,
      closeConv: closeConv,
      openDm: openDm,
      setActive: setActive,
      // Closes the connection as a network failure would; the client then
      // reconnects by itself, no sooner than holdMs from now.
      disconnect: function (holdMs) {
        if (state.client) state.client.drop(holdMs || 0);
      },
    };
  }

  window.ChatdWebState = { create: create };
})();
