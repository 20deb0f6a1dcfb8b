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

  // The WebSocket URL of chatd on this page's host (wss: under https).
  function connectUrl() {
    var u = new URL("ws", window.location.href);
    u.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
    u.search = "";
    u.hash = "";
    return u.href;
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

  // ------------------------------------------------------------ messenger
  // Token users (the page opened with ?token=): the shared client's
  // conversation store (client.conversations, client.timeline(key)) is the
  // state. What follows are the page's rules on top of it (pure functions of
  // their arguments) and the messenger's actions; no DOM.

  var REACTIONS = ["👍", "❤️", "😂", "😮", "🙏"];
  var RANK = { owner: 3, admin: 2, member: 1 };
  var MENTION_RE = /(^|\s)@([\p{L}\p{N}_.-]*)$/u;
  var MENTION_ALL = "@all";
  // the list's preview of a message of attachments (the first one's kind)
  var MEDIA_LABELS = { image: "[Image]", voice: "[Voice]", video: "[Video]", file: "[File]" };
  // a long conversation renders its newest WINDOW items, WINDOW_STEP more each
  // time the reader scrolls to the top (or asks for earlier ones)
  var WINDOW = 200;
  var WINDOW_STEP = 100;
  // why an upload was refused (docs/api.md, "Media"), for the composer
  var UPLOAD_FAILED = {
    too_large: "The file is too large.",
    too_many_pixels: "The image has too many pixels.",
    quota_exceeded: "You have uploaded too much today: try again later.",
    bad_image: "That image could not be read.",
    bad_request: "The file could not be uploaded (it is empty or broken).",
    unauthorized: "Your sign-in has expired: open chatd from your app again.",
    network: "The upload did not reach chatd: check the connection and try again.",
    unavailable: "chatd could not store the file: try again.",
  };
  // a /media/ path as chatd signs it: /media/ID or /media/ID/thumb, then the query
  var MEDIA_PATH_RE = /^\/media\/[A-Za-z0-9_-]{1,64}(\/thumb)?(\?[A-Za-z0-9_=&%.~-]*)?$/;

  function isRoomKey(key) {
    return key.charAt(0) === "r";
  }

  function badgeText(n) {
    return n > 99 ? "99+" : String(n);
  }

  function tabTitle(total) {
    return (total > 0 ? "(" + badgeText(total) + ") " : "") + "chatd";
  }

  // The name a conversation is shown under: its title, "#room" or the user.
  function convName(key, conv) {
    if (conv && conv.title) return conv.title;
    return isRoomKey(key) ? "#" + key.slice(2) : key.slice(2);
  }

  // The list's second line: a draft, the tombstone of a recalled message, or
  // the last message ("name: text" in rooms; "[Image]" and the like for one of
  // attachments, whose kind is `last.media` or `media`).
  function preview(conv, me, media) {
    if (conv.draft) return { draft: true, text: conv.draft };
    var last = conv.last;
    if (!last) return { draft: false, text: "" };
    if (last.recalled) return { draft: false, text: "[message recalled]" };
    var text = String(last.text || "");
    var kind = last.media || media;
    if (kind) text = mediaLabel(kind) + (text ? " " + text : "");
    if (isRoomKey(conv.key)) text = (last.from === me ? "You" : last.name || last.from) + ": " + text;
    return { draft: false, text: text };
  }

  // The tick under my own message: DM "read"/"sent", room "read by N"/"sent".
  function tick(item, isDm) {
    if (!item.mine) return "";
    if (item.status === "pending") return "sending…";
    if (item.status === "failed") return "not sent";
    if (isDm) return item.status === "read" ? "read" : "sent";
    return item.readBy > 0 ? "read by " + item.readBy : "sent";
  }

  function subject(user, me) {
    return user === me ? "You" : user;
  }

  function object(user, me) {
    return user === me ? "you" : user;
  }

  // A membership or room event as one grey line.
  function eventText(e, me) {
    var u = object(e.user, me);
    var by = subject(e.by, me);
    switch (e.event) {
      case "created":
        return subject(e.user, me) + " created the room";
      case "joined":
        return subject(e.user, me) + " joined";
      case "invited":
        return by + " invited " + u;
      case "left":
        return subject(e.user, me) + " left";
      case "kicked":
        return by + " removed " + u;
      case "banned":
        return by + " banned " + u;
      case "unbanned":
        return by + " unbanned " + u;
      case "role":
        return by + " made " + u + (e.role === "owner" ? " the owner" : e.role === "admin" ? " an admin" : " a member");
      case "room_updated": {
        var ch = e.changes || {};
        var parts = [];
        if (ch.title != null) parts.push("the title to “" + ch.title + "”");
        if (ch.topic != null) parts.push("the topic to “" + ch.topic + "”");
        if (ch.kind != null) parts.push("the room to " + ch.kind);
        if (ch.avatar != null) parts.push("the avatar");
        return by + " changed " + (parts.join(", ") || "the room");
      }
      default:
        return subject(e.user, me) + ": " + e.event;
    }
  }

  function isMessage(item) {
    return !item.event && item.seq != null && !item.recalled;
  }

  function mediaLabel(kind) {
    return MEDIA_LABELS[kind] || MEDIA_LABELS.file;
  }

  // The /media/ path of an attachment's `url`/`thumb_url`, or "" for anything
  // else: the page only ever loads or links what chatd signed on its own host.
  function mediaPath(path) {
    return typeof path === "string" && MEDIA_PATH_RE.test(path) ? path : "";
  }

  // How an attachment is shown: {show: image|audio|video|file, src, href, name,
  // label}; src/href are "" when the server's URLs are missing or not /media/.
  function attachmentView(a) {
    var kind = a && a.kind;
    var mime = String((a && a.mime) || "");
    var href = mediaPath(a && a.url);
    var name = String((a && a.name) || "");
    var show = "file";
    if (kind === "image") show = "image";
    else if (kind === "voice" || (kind !== "video" && mime.indexOf("audio/") === 0)) show = "audio";
    else if (kind === "video") show = "video";
    var v = { show: show, href: href, src: href, name: name, label: mediaLabel(kind) };
    if (show === "image") v.src = mediaPath(a.thumb_url) || href;
    return v;
  }

  // A thumbnail's box for an image of width x height inside max x max, so the
  // timeline does not jump when it loads; null when the size is not known.
  function thumbBox(width, height, max) {
    if (!(width > 0) || !(height > 0)) return null;
    var k = Math.min(1, (max || 240) / Math.max(width, height));
    return { width: Math.max(1, Math.round(width * k)), height: Math.max(1, Math.round(height * k)) };
  }

  // The badge of a file: its extension ("PDF", at most 4 letters or digits), else "FILE".
  function fileBadge(name) {
    var m = /\.([A-Za-z0-9]{1,4})$/.exec(String(name || ""));
    return m ? m[1].toUpperCase() : "FILE";
  }

  // The kind a File is shown as until chatd, which reads the bytes, says what it is.
  function mediaKind(mime) {
    var m = String(mime || "");
    if (m.indexOf("image/") === 0) return "image";
    if (m.indexOf("audio/") === 0) return "voice";
    if (m.indexOf("video/") === 0) return "video";
    return "file";
  }

  // The line under my file still uploading (the client's `upload` {state, progress}).
  function uploadLabel(up) {
    if (up.state === "waiting") return "Upload failed, trying again…";
    return "Uploading " + Math.round(up.progress || 0) + "%";
  }

  function uploadError(e) {
    var code = e && e.code;
    return UPLOAD_FAILED[code] || (e && e.message) || "The upload failed.";
  }

  // The first item to render of `length` with a window of `size` items.
  function windowStart(length, size) {
    return Math.max(0, length - Math.max(size || WINDOW, 1));
  }

  // The users the events of `items` leave banned (banned, not unbanned since),
  // newest ban first: what the page knows without a banned list from chatd.
  function bannedIn(items) {
    var state = new Map();
    (items || []).forEach(function (it) {
      if (it.event === "banned") state.set(it.user, it.seq);
      else if (it.event === "unbanned" || it.event === "joined" || it.event === "invited") state.delete(it.user);
    });
    return Array.from(state.keys()).sort(function (a, b) {
      return state.get(b) - state.get(a);
    });
  }

  function canEdit(item) {
    return isMessage(item) && !!item.mine;
  }

  // My newest message that can still be edited (Up arrow), or null.
  function lastEditable(items) {
    for (var i = items.length - 1; i >= 0; i--) {
      if (canEdit(items[i])) return items[i];
    }
    return null;
  }

  // An "@prefix" being typed just before the caret: {start, prefix} or null.
  function mentionQuery(text, caret) {
    var m = MENTION_RE.exec(text.slice(0, caret));
    return m ? { start: caret - m[2].length - 1, prefix: m[2] } : null;
  }

  // Members whose id or name starts with `prefix` (not me; @all for admins).
  function mentionCandidates(members, prefix, me, role, max) {
    var p = prefix.toLowerCase();
    var out = [];
    if ((role === "owner" || role === "admin") && "all".indexOf(p) === 0) {
      out.push({ user: MENTION_ALL, name: "everyone" });
    }
    (members || []).forEach(function (m) {
      if (m.user === me) return;
      var name = String(m.name || "").toLowerCase();
      if (m.user.toLowerCase().indexOf(p) === 0 || name.indexOf(p) === 0) out.push(m);
    });
    return out.slice(0, max || 8);
  }

  // The users (and @all) that `text` mentions as "@user" out of `users`.
  function mentionsIn(text, users) {
    var out = [];
    (users || []).forEach(function (u) {
      var tag = u === MENTION_ALL ? u : "@" + u;
      var i = text.indexOf(tag);
      while (i >= 0) {
        var before = i === 0 ? " " : text.charAt(i - 1);
        var after = text.charAt(i + tag.length);
        if (/\s/.test(before) && !/[\p{L}\p{N}_.-]/u.test(after)) {
          if (out.indexOf(u) < 0) out.push(u);
          break;
        }
        i = text.indexOf(tag, i + 1);
      }
    });
    return out;
  }

  // May a member of role `mine` kick/ban one of role `theirs`?
  function outranks(mine, theirs) {
    return (RANK[mine] || 0) >= RANK.admin && (RANK[mine] || 0) > (RANK[theirs] || 0);
  }

  // The claims of a JWT, unverified (chatd verifies it): for the user id and
  // the expiry only.
  function tokenClaims(token) {
    try {
      var part = String(token).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      var bytes = Uint8Array.from(atob(part), function (c) {
        return c.charCodeAt(0);
      });
      var claims = JSON.parse(new TextDecoder().decode(bytes));
      return claims && typeof claims === "object" ? claims : {};
    } catch (e) {
      return {};
    }
  }

  var OP_FAILED = {
    too_late: "Too late to recall that message.",
    forbidden: "You may not do that here.",
    no_such_message: "That message is gone.",
    too_large: "Too many reactions on that message.",
  };

  function opFailedText(code) {
    return OP_FAILED[code] || "Failed: " + code;
  }

  /**
   * The messenger of a token user. `view` gets told: conn(), welcomed(),
   * list(), unread(total), timeline(key), removed(key, kind), roomChanged(key),
   * typing(key), toast(text), expired(); `opts.visible()` says whether the open
   * conversation is on screen (markRead only then).
   */
  function createMessenger(view, options) {
    var opts = options || {};
    var Chatd = opts.ChatdClient || window.ChatdClient;
    var claims = tokenClaims(opts.token);
    var sub = typeof claims.sub === "string" ? claims.sub : "";
    var client = new Chatd.ChatClient({
      url: connectUrl(),
      token: opts.token,
      tokenIn: "query", // a browser WebSocket cannot send an Authorization header
      tokenExpiresAt: typeof claims.exp === "number" ? claims.exp * 1000 : null,
      // the tab's sessionStorage, as for anonymous sessions: a reload shows the
      // cached list at once and resends the outbox; two tabs never share one
      adapter: opts.adapter || Chatd.browserAdapter(window, { storage: sessionStorage() }),
      storageKey: "chatd.user." + sub,
      idPrefix: "c-",
    });
    var st = {
      client: client,
      user: client.user || sub || null,
      name: typeof claims.name === "string" ? claims.name : sub,
      conn: "connecting",
      reconnectAt: 0,
      active: null, // the open conversation's key
      reply: null, // the message replied to: {seq, from, name, text}
      editing: null, // my message being edited: {seq, text}
      members: new Map(), // room key -> [{user, name, role, online}] (allMembers)
      recalled: new Map(), // "key seq" -> my text before I recalled it (re-edit)
      typing: new Map(), // room key -> Map(user -> ms the "is typing" line ends)
      typingSent: new Map(), // room key -> ms of my last typing frame
      invalid: !sub, // not a token at all: the page does not connect
      welcomed: false, // a welcome came on some connection of this page
      refused: false, // several tries and never welcomed: a browser cannot tell a
      // refused token (HTTP 401) from a server it cannot reach
    };

    client.on("status", function (s) {
      if (s.state === "open") st.conn = "open";
      else if (s.state === "closed") st.conn = "idle";
      else if (s.state === "reconnecting" && s.delay !== undefined) {
        st.conn = "waiting";
        st.reconnectAt = Date.now() + s.delay;
        if (!st.welcomed && s.attempt >= 3) st.refused = true;
      } else st.conn = "connecting";
      view.conn();
    });
    client.on("welcome", function (f) {
      st.welcomed = true;
      st.refused = false;
      st.user = f.user;
      st.name = f.name || f.user;
      view.welcomed();
    });
    client.on("conversations", function () {
      view.list();
    });
    client.on("unread", function (u) {
      view.unread(u.total);
    });
    client.on("timeline", function (e) {
      if (e.key === st.active) view.timeline(e.key);
    });
    client.on("removed", function (e) {
      st.members.delete(e.key);
      if (e.key === st.active) {
        st.active = null;
        st.reply = null;
        st.editing = null;
      }
      view.removed(e.key, e.kind);
    });
    client.on("event", function (e) {
      st.members.delete(e.key); // membership or roles changed: ask again
      if (e.key === st.active) view.roomChanged(e.key);
    });
    client.on("typing", function (t) {
      var key = "r:" + t.room;
      if (!st.typing.has(key)) st.typing.set(key, new Map());
      st.typing.get(key).set(t.from, Date.now() + TYPING_SHOW_MS);
      view.typing(key);
    });
    // a message from someone ends their "is typing"
    client.on("message", function (m) {
      var t = st.typing.get("r:" + m.room);
      if (t && t.delete(m.from)) view.typing("r:" + m.room);
    });
    client.on("failed", function (e) {
      if (e.kind === "op") view.toast(opFailedText(e.error));
      else if (e.upload && view.uploadFailed) view.uploadFailed(Object.assign({ key: Chatd.entryKey(e) }, e));
    });
    // my files' upload progress (sendMedia); their state changes come as `timeline`
    client.on("upload", function (e) {
      if (view.upload) view.upload(e);
    });
    client.on("error", function (f) {
      // errors about a request of ours reject it (or fail its outbox entry)
      if (f.ref || f.code === "rate_limited") return;
      view.toast(f.message || "Error: " + f.code);
    });
    client.on("auth", function () {
      view.expired();
    });

    function conversation(key) {
      return client.conversation(key);
    }

    // The kind of the first attachment of conversation `c`'s last message when
    // the summary does not say it: chatd's list summaries (sync, conversations)
    // carry the last message's text only, its cached timeline item the rest.
    function lastMedia(c) {
      var last = c && c.last;
      if (!last || last.media || last.recalled || last.seq == null) return null; // (a DM only my outbox has)
      var it = client.store.line(c.key).bySeq.get(last.seq);
      return it && it.attachments && it.attachments.length ? it.attachments[0].kind || "file" : null;
    }

    function role(key) {
      var c = key && conversation(key);
      return c ? c.role : null;
    }

    // Marks the open conversation read when it is on screen and has unread.
    function markSeen() {
      var key = st.active;
      if (!key || !(opts.visible ? opts.visible() : true)) return;
      var c = conversation(key);
      if (c && (c.unread > 0 || c.mentions > 0)) client.markRead(key);
    }

    function open(key) {
      if (st.active !== key) {
        st.reply = null;
        st.editing = null;
      }
      st.active = key;
      markSeen();
    }

    function loadEarlier(key) {
      if (!client.connected) return Promise.reject(new Error("offline"));
      return client.loadEarlier(key);
    }

    // Sends `text` (and the uploads in `attachments`) to the open conversation:
    // a reply, with the mentions it names, or the new text of the message being
    // edited.
    function send(text, attachments) {
      var key = st.active;
      if (!key) return null;
      if (st.editing) {
        var ed = st.editing;
        st.editing = null;
        if (text !== ed.text) client.edit(key, ed.seq, text);
        return { edited: ed.seq };
      }
      var o = extrasFor(key, text);
      if (attachments && attachments.length) o.attachments = attachments;
      var entry = isRoomKey(key) ? client.send(key.slice(2), text, o) : client.dm(key.slice(2), text, o);
      st.reply = null;
      return entry;
    }

    // The reply_to (the message replied to) and mentions of a message of `text` to `key`.
    function extrasFor(key, text) {
      var o = {};
      if (st.reply) o.reply_to = st.reply.seq;
      if (isRoomKey(key)) {
        var users = (st.members.get(key) || []).map(function (m) {
          return m.user;
        });
        if (role(key) === "owner" || role(key) === "admin") users.push(MENTION_ALL);
        o.mentions = mentionsIn(text, users);
      }
      return o;
    }

    // Sends a picked, dropped or pasted File (with `text`, a caption) to the open
    // conversation as its own message through the client's outbox (sendMedia).
    function sendMedia(file, text) {
      var key = st.active;
      if (!key) return null;
      var spec = extrasFor(key, text || "");
      Object.assign(spec, { file: file, text: text || "", kind: mediaKind(file.type), name: file.name || "file", size: file.size });
      if (file.type) spec.mime = file.type;
      var entry = client.sendMedia(key, spec);
      st.reply = null;
      return entry;
    }

    function recall(key, item) {
      if (item.mine) st.recalled.set(key + " " + item.seq, item.text);
      return client.recall(key, item.seq);
    }

    // Every member of room `key` (cached until an event of the room).
    function members(key) {
      var cached = st.members.get(key);
      if (cached) return Promise.resolve(cached);
      if (!client.connected) return Promise.reject(new Error("offline"));
      return client.allMembers(key.slice(2)).then(function (list) {
        st.members.set(key, list);
        return list;
      });
    }

    // A room command (the client syncs its events in after the ack); its room's
    // member cache is dropped once it is done.
    function command(key, run) {
      if (!client.connected) return Promise.reject(new Error("offline"));
      return run().then(function (r) {
        st.members.delete(key);
        return r;
      });
    }

    // The room command client[name](room, user) for a conversation key.
    function memberCommand(name) {
      return function (key, user) {
        return command(key, function () {
          return client[name](key.slice(2), user);
        });
      };
    }

    // Leaving a room ends the membership on every device; `left` then removes it.
    function leave(key) {
      if (!client.connected) return Promise.reject(new Error("offline"));
      client.leave(key.slice(2));
      return Promise.resolve();
    }

    // "I am typing" in room `key`, at most every TYPING_SEND_EVERY_MS. The client
    // sends typing only for rooms it join()ed: a room that came by subscription
    // is joined first (a member's join only subscribes the connection again).
    function typing(key) {
      var room = key.slice(2);
      var now = Date.now();
      if (!client.connected || now - (st.typingSent.get(key) || 0) < TYPING_SEND_EVERY_MS) return;
      st.typingSent.set(key, now);
      var r = client.rooms.get(room);
      if (r && r.joined) client.typing(room);
      else if (!r) {
        client.join(room).then(
          function () {
            client.typing(room);
          },
          function () {}
        );
      }
    }

    // Who is typing in `key` now (sorted; expired entries dropped).
    function typingIn(key) {
      var t = st.typing.get(key);
      var now = Date.now();
      var names = [];
      if (t) {
        t.forEach(function (until, user) {
          if (until > now) names.push(user);
          else t.delete(user);
        });
      }
      return names.sort();
    }

    return {
      state: st,
      client: client,
      conversation: conversation,
      lastMedia: lastMedia,
      role: role,
      open: open,
      markSeen: markSeen,
      loadEarlier: loadEarlier,
      send: send,
      recall: recall,
      react: function (key, seq, emoji) {
        return client.react(key, seq, emoji);
      },
      members: members,
      typing: typing,
      typingIn: typingIn,
      canRecall: function (key, item) {
        return client.canRecall(key, item);
      },
      upload: function (file) {
        return client.upload(file);
      },
      sendMedia: sendMedia,
      mediaInfo: function (id) {
        return client.mediaInfo(id);
      },
      mediaUrl: function (path) {
        return client.mediaUrl(path);
      },
      // Creates a room; resolves with its key (the client puts chatd's room_info
      // answer into the list).
      createRoom: function (spec) {
        return client.createRoom(spec).then(function () {
          return "r:" + spec.room;
        });
      },
      // Joins a public room by name (the client syncs it into the store).
      joinRoom: function (room) {
        return client.join(room).then(function () {
          return "r:" + room;
        });
      },
      roomInfo: function (key) {
        return client.roomInfo(key.slice(2));
      },
      invite: memberCommand("invite"),
      kick: memberCommand("kick"),
      ban: memberCommand("ban"),
      unban: memberCommand("unban"),
      setRole: function (key, user, r) {
        return command(key, function () {
          return client.setRole(key.slice(2), user, r);
        });
      },
      updateRoom: function (key, changes) {
        return command(key, function () {
          return client.updateRoom(key.slice(2), changes);
        });
      },
      mute: function (key, on) {
        return client.mute(key, on);
      },
      leave: leave,
      setDraft: function (key, text) {
        client.setDraft(key, text);
      },
    };
  }

  window.ChatdWebState = {
    create: create,
    createMessenger: createMessenger,
    messenger: {
      REACTIONS: REACTIONS,
      WINDOW: WINDOW,
      WINDOW_STEP: WINDOW_STEP,
      NAME_RE: NAME_RE,
      ROOM_RE: ROOM_RE,
      badgeText: badgeText,
      tabTitle: tabTitle,
      convName: convName,
      preview: preview,
      tick: tick,
      eventText: eventText,
      canEdit: canEdit,
      mediaLabel: mediaLabel,
      mediaPath: mediaPath,
      attachmentView: attachmentView,
      thumbBox: thumbBox,
      fileBadge: fileBadge,
      uploadError: uploadError,
      uploadLabel: uploadLabel,
      mediaKind: mediaKind,
      opFailedText: opFailedText,
      windowStart: windowStart,
      bannedIn: bannedIn,
      lastEditable: lastEditable,
      mentionQuery: mentionQuery,
      mentionCandidates: mentionCandidates,
      mentionsIn: mentionsIn,
      outranks: outranks,
      tokenClaims: tokenClaims,
    },
  };
})();
