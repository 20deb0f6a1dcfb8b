/*
 * chatd web client: a dependency-free chat UI speaking the chatd.v1 protocol
 * (docs/protocol.md) over a WebSocket at /ws on the page's own host.
 *
 * Rules this file keeps:
 *  - user data is only ever put into the page with textContent / attributes
 *    set through the DOM API, never with innerHTML;
 *  - every outgoing send/dm carries a client id and sits in an outbox until
 *    its ack arrives; the outbox is resent (same ids) after a reconnect and
 *    the server drops duplicates;
 *  - after a reconnect each room is rejoined with `since` = the highest seq
 *    seen, so the server replays exactly what was missed.
 */
(function () {
  "use strict";

  // ---------------------------------------------------------------- config
  var SUBPROTOCOL = "chatd.v1";
  var BACKOFF_BASE_MS = 500;
  var BACKOFF_MAX_MS = 30000;
  var PONG_TIMEOUT_MS = 10000;
  var TYPING_SEND_EVERY_MS = 2000;
  var TYPING_SHOW_MS = 3000;
  var HISTORY_PAGE = 50;
  var NAME_RE = /^[\p{L}\p{N}_.-]{1,32}$/u;
  var ROOM_RE = /^[\p{L}\p{N}_.:#-]{1,64}$/u;

  // ----------------------------------------------------------------- state
  var state = {
    name: null, // name asked for
    user: null, // user id from welcome
    welcomed: false, // got a welcome since the last sign-in (reconnects keep it)
    ws: null,
    conn: "idle", // idle | connecting | open | waiting
    attempt: 0,
    reconnectTimer: null,
    reconnectAt: 0,
    heartbeatTimer: null,
    pongTimer: null,
    pingInterval: 30,
    maxText: 4000,
    convs: new Map(), // key -> conversation
    order: [], // room keys in sidebar order
    dmOrder: [],
    active: null,
    outbox: new Map(), // id -> pending item (insertion order = send order)
    idPrefix: randomHex(8),
    idCounter: 0,
    lastTypingSent: new Map(), // room -> ms
    signedOut: true,
  };

  // ------------------------------------------------------------------ DOM
  var $ = function (id) {
    return document.getElementById(id);
  };
  var el = {};

  function h(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text != null) node.textContent = String(text);
    return node;
  }

  // --------------------------------------------------------------- helpers
  function randomHex(bytes) {
    var a = new Uint8Array(bytes);
    (window.crypto || window.msCrypto).getRandomValues(a);
    return Array.prototype.map
      .call(a, function (b) {
        return (b < 16 ? "0" : "") + b.toString(16);
      })
      .join("");
  }

  function newId() {
    state.idCounter += 1;
    return "c-" + state.idPrefix + "-" + state.idCounter.toString(36);
  }

  function store(key, value) {
    try {
      if (value == null) window.localStorage.removeItem(key);
      else window.localStorage.setItem(key, JSON.stringify(value));
    } catch (e) {
      /* storage may be disabled; the client works without it */
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

  function roomKey(room) {
    return "room:" + room;
  }
  function dmKey(user) {
    return "dm:" + user;
  }

  function fmtTime(ts) {
    var d = new Date(ts);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  function fmtDay(ts) {
    var d = new Date(ts);
    var today = new Date();
    var y = new Date(today.getTime() - 86400000);
    if (d.toDateString() === today.toDateString()) return "Today";
    if (d.toDateString() === y.toDateString()) return "Yesterday";
    return d.toLocaleDateString([], { weekday: "long", year: "numeric", month: "long", day: "numeric" });
  }

  // A stable colour per user, for avatars.
  function hue(s) {
    var x = 0;
    for (var i = 0; i < s.length; i++) x = (x * 31 + s.charCodeAt(i)) >>> 0;
    return x % 360;
  }
  function avatar(user, cls) {
    var a = h("span", "avatar" + (cls ? " " + cls : ""), Array.from(user)[0] || "?");
    a.style.setProperty("--h", String(hue(user)));
    a.setAttribute("aria-hidden", "true");
    return a;
  }

  // Text with http(s) links made clickable; everything is a text node.
  var URL_RE = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]]/g;
  function renderText(container, text) {
    var last = 0;
    var m;
    URL_RE.lastIndex = 0;
    while ((m = URL_RE.exec(text)) !== null) {
      if (m.index > last) container.appendChild(document.createTextNode(text.slice(last, m.index)));
      var href = null;
      try {
        var u = new URL(m[0]);
        if (u.protocol === "http:" || u.protocol === "https:") href = u.href;
      } catch (e) {
        href = null;
      }
      if (href) {
        var a = h("a", null, m[0]);
        a.href = href;
        a.target = "_blank";
        a.rel = "noopener noreferrer nofollow";
        container.appendChild(a);
      } else {
        container.appendChild(document.createTextNode(m[0]));
      }
      last = m.index + m[0].length;
    }
    if (last < text.length) container.appendChild(document.createTextNode(text.slice(last)));
  }

  function toast(text) {
    el.toast.textContent = text;
    el.toast.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(function () {
      el.toast.hidden = true;
    }, 5000);
  }

  // --------------------------------------------------------- conversations
  function getConv(key, create) {
    var c = state.convs.get(key);
    if (!c && create) {
      var isRoom = key.indexOf("room:") === 0;
      c = {
        key: key,
        kind: isRoom ? "room" : "dm",
        id: key.slice(isRoom ? 5 : 3),
        msgs: new Map(), // seq -> item
        pending: [], // items without seq, in send order
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
        els: new Map(), // render cache: item key -> element
      };
      state.convs.set(key, c);
      if (isRoom) state.order.push(key);
      else state.dmOrder.push(key);
    }
    return c;
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

  // Adds a stored message (from message/history/replay/dm) to its conversation.
  // Returns true when it was new.
  function addMessage(conv, m, live) {
    if (typeof m.seq !== "number") return false;
    if (conv.msgs.has(m.seq)) return false;
    var item = {
      seq: m.seq,
      from: m.from,
      name: m.name || m.from,
      text: String(m.text),
      ts: m.ts,
      id: m.id == null ? null : m.id,
      status: "sent",
    };
    // One of our own messages whose ack was lost (replay after reconnect):
    // it settles the outbox entry instead of showing twice.
    if (item.from === state.user && item.id && state.outbox.has(item.id)) {
      settle(item.id, m.seq, m.ts);
      return false;
    }
    conv.msgs.set(m.seq, item);
    if (m.seq > conv.lastSeq) conv.lastSeq = m.seq;
    if (conv.oldestSeq == null || m.seq < conv.oldestSeq) conv.oldestSeq = m.seq;
    if (live && item.from !== state.user) {
      conv.typing.delete(item.from);
      if (conv.key !== state.active || document.hidden) {
        conv.unread += 1;
      }
    }
    return true;
  }

  function addNote(conv, text) {
    conv.noteCounter = (conv.noteCounter || 0) + 1;
    conv.notes.push({ afterSeq: conv.lastSeq, n: conv.noteCounter, text: text, ts: Date.now() });
    if (conv.notes.length > 200) conv.notes.shift();
  }

  // An ack (or a replayed own message) moves a pending item to its seq.
  function settle(id, seq, ts) {
    var item = state.outbox.get(id);
    if (!item) return;
    state.outbox.delete(id);
    var conv = getConv(item.convKey, true);
    var i = conv.pending.indexOf(item);
    if (i >= 0) conv.pending.splice(i, 1);
    if (!conv.msgs.has(seq)) {
      // Reuse the pending element so it only changes state, not place.
      var cached = conv.els.get("p" + id);
      if (cached) conv.els.set("s" + seq, cached);
      item.seq = seq;
      item.ts = ts;
      item.status = "sent";
      conv.msgs.set(seq, item);
    }
    if (seq > conv.lastSeq) conv.lastSeq = seq;
    if (conv.oldestSeq == null || seq < conv.oldestSeq) conv.oldestSeq = seq;
    schedule(conv);
  }

  function failPending(id, reason) {
    var item = state.outbox.get(id);
    if (!item) return false;
    state.outbox.delete(id);
    item.status = "failed";
    item.error = reason;
    schedule(getConv(item.convKey, true));
    return true;
  }

  // ------------------------------------------------------------- sending
  function sendFrame(obj) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN && state.conn === "open") {
      state.ws.send(JSON.stringify(obj));
      return true;
    }
    return false;
  }

  function queueMessage(conv, text) {
    var id = newId();
    var frame =
      conv.kind === "room"
        ? { type: "send", room: conv.id, text: text, id: id }
        : { type: "dm", to: conv.id, text: text, id: id };
    var item = {
      seq: null,
      from: state.user,
      name: state.name,
      text: text,
      ts: Date.now(),
      id: id,
      status: "pending",
      frame: frame,
      convKey: conv.key,
    };
    conv.pending.push(item);
    state.outbox.set(id, item);
    sendFrame(frame);
    schedule(conv, { stick: true });
  }

  function retryItem(item) {
    var conv = getConv(item.convKey, true);
    item.status = "pending";
    item.error = null;
    // Keep the same id: if the first try did reach the server it answers
    // with the original ack instead of storing the message twice.
    state.outbox.delete(item.id);
    state.outbox.set(item.id, item);
    var i = conv.pending.indexOf(item);
    if (i >= 0) conv.pending.splice(i, 1);
    conv.pending.push(item);
    sendFrame(item.frame);
    schedule(conv, { stick: true });
  }

  function flushOutbox() {
    state.outbox.forEach(function (item) {
      sendFrame(item.frame);
    });
  }

  function maybeSendTyping(conv) {
    if (conv.kind !== "room" || !conv.joined) return;
    var now = Date.now();
    var last = state.lastTypingSent.get(conv.id) || 0;
    if (now - last < TYPING_SEND_EVERY_MS) return;
    if (sendFrame({ type: "typing", room: conv.id })) state.lastTypingSent.set(conv.id, now);
  }

  function requestOlder(conv) {
    if (conv.loadingOlder) return;
    var before = conv.oldestSeq;
    if (before == null) before = conv.lastSeq + 1;
    if (before <= 1 && conv.loaded) return;
    var frame =
      conv.kind === "room"
        ? { type: "history", room: conv.id, limit: HISTORY_PAGE }
        : { type: "dm_history", with: conv.id, limit: HISTORY_PAGE };
    if (before > 0 && (conv.loaded || conv.kind === "room")) frame.before = before;
    if (sendFrame(frame)) {
      conv.loadingOlder = true;
      schedule(conv);
    }
  }

  function joinRoom(room, activate) {
    var key = roomKey(room);
    var existed = state.convs.has(key);
    var conv = getConv(key, true);
    if (!conv.joined) {
      var frame = { type: "join", room: room };
      if (conv.loaded) frame.since = conv.lastSeq;
      sendFrame(frame);
    }
    if (activate || !state.active) activate_(key);
    if (!existed) persist();
    renderSidebar();
  }

  function leaveRoom(conv) {
    if (conv.joined) sendFrame({ type: "leave", room: conv.id });
    closeConv(conv);
  }

  function closeConv(conv) {
    // Drop queued messages of this conversation.
    conv.pending.forEach(function (item) {
      state.outbox.delete(item.id);
    });
    state.convs.delete(conv.key);
    var list = conv.kind === "room" ? state.order : state.dmOrder;
    var i = list.indexOf(conv.key);
    if (i >= 0) list.splice(i, 1);
    persist();
    if (state.active === conv.key) {
      var next = state.order[Math.max(0, i - 1)] || state.order[0] || state.dmOrder[0] || null;
      activate_(next);
    }
    renderSidebar();
  }

  function openDm(user) {
    if (!user || user === state.user) return;
    var key = dmKey(user);
    var existed = state.convs.has(key);
    var conv = getConv(key, true);
    if (!existed) {
      persist();
      if (state.conn === "open") requestOlder(conv);
    }
    activate_(key);
    el.composerInput.focus();
  }

  // -------------------------------------------------------------- inbound
  var handlers = {
    welcome: function (f) {
      var first = !state.welcomed;
      state.user = f.user;
      state.name = f.name || f.user;
      state.welcomed = true;
      state.attempt = 0;
      if (typeof f.max_text_length === "number") state.maxText = f.max_text_length;
      if (typeof f.ping_interval === "number" && f.ping_interval > 0) state.pingInterval = f.ping_interval;
      setConn("open");
      startHeartbeat();
      el.meName.textContent = state.name;
      el.meAvatar.replaceWith((el.meAvatar = avatar(state.user)));
      if (first) {
        el.loginError.textContent = "";
        showApp();
      }
      // Rejoin every room (with `since` once its history is loaded) and catch
      // up on open DM conversations; then resend what was never acked.
      state.convs.forEach(function (conv) {
        if (conv.kind === "room") {
          conv.joined = false;
          var frame = { type: "join", room: conv.id };
          if (conv.loaded) frame.since = conv.lastSeq;
          sendFrame(frame);
        } else if (conv.loaded) {
          sendFrame({ type: "dm_history", with: conv.id, since: conv.lastSeq, limit: 200 });
          conv.catchingUp = true;
        } else {
          requestOlder(conv);
        }
      });
      flushOutbox();
      renderAll();
    },

    joined: function (f) {
      var conv = getConv(roomKey(f.room), true);
      var wasLoaded = conv.loaded;
      conv.joined = true;
      conv.members = new Set(f.members || []);
      if (wasLoaded && typeof f.seq === "number" && f.seq < conv.lastSeq) {
        // The server's history went backwards (it restarted without a durable
        // store): our seqs mean nothing now, start over from its view.
        conv.msgs.clear();
        conv.els.clear();
        conv.notes = [];
        conv.oldestSeq = null;
        conv.lastSeq = 0;
        conv.loaded = false;
        wasLoaded = false;
        addNote(conv, "The server's history was reset.");
      }
      if (f.truncated) {
        // More were missed than the server replays: drop the gap, page back later.
        conv.msgs.clear();
        conv.els.clear();
        conv.notes = [];
        conv.oldestSeq = null;
        conv.more = true;
      }
      if (!wasLoaded) {
        // First join: live stream starts after f.seq; fetch the page before it.
        if (f.seq > conv.lastSeq) conv.lastSeq = f.seq;
        if (f.seq > 0) {
          conv.loadingOlder = true;
          sendFrame({ type: "history", room: conv.id, before: f.seq + 1, limit: HISTORY_PAGE });
        } else {
          conv.more = false;
        }
        conv.loaded = true;
      }
      schedule(conv);
      renderSidebar();
    },

    left: function (f) {
      var conv = getConv(roomKey(f.room), false);
      if (conv) conv.joined = false;
    },

    presence: function (f) {
      var conv = getConv(roomKey(f.room), false);
      if (!conv) return;
      if (f.event === "join") {
        if (!conv.members.has(f.user)) {
          conv.members.add(f.user);
          addNote(conv, f.user + " joined");
        }
      } else if (f.event === "leave") {
        if (conv.members.delete(f.user)) addNote(conv, f.user + " left");
        conv.typing.delete(f.user);
      }
      schedule(conv);
    },

    message: function (f) {
      var conv = getConv(roomKey(f.room), false);
      if (!conv) return;
      if (addMessage(conv, f, true)) schedule(conv);
    },

    dm: function (f) {
      var peer = f.from === state.user ? f.to : f.from;
      var key = dmKey(peer);
      var existed = state.convs.has(key);
      var conv = getConv(key, true);
      if (!existed) {
        persist();
        // Load what came before this message too.
        conv.loaded = true;
        conv.more = f.seq > 1;
      }
      if (addMessage(conv, f, true)) schedule(conv);
    },

    ack: function (f) {
      if (f.id != null) settle(f.id, f.seq, f.ts);
    },

    typing: function (f) {
      var conv = getConv(roomKey(f.room), false);
      if (!conv || f.from === state.user) return;
      conv.typing.set(f.from, Date.now() + TYPING_SHOW_MS);
      if (conv.key === state.active) renderTyping();
    },

    history: function (f) {
      var conv = getConv(roomKey(f.room), false);
      if (!conv) return;
      applyPage(conv, f);
    },

    dm_history: function (f) {
      var conv = getConv(dmKey(f.with), true);
      if (conv.catchingUp) {
        conv.catchingUp = false;
        var n = 0;
        (f.messages || []).forEach(function (m) {
          if (addMessage(conv, m, true)) n++;
        });
        if (f.more) conv.more = true;
        schedule(conv);
        renderSidebar();
        return;
      }
      applyPage(conv, f);
    },

    pong: function () {
      clearTimeout(state.pongTimer);
      state.pongTimer = null;
    },

    error: function (f) {
      var code = f.code;
      if (code === "name_taken" || code === "bad_name") {
        state.nameError = code;
        return; // the close that follows handles it
      }
      if (f.ref != null && state.outbox.has(f.ref)) {
        if (code === "unavailable") {
          // Not stored; resend the same id a little later.
          var item = state.outbox.get(f.ref);
          setTimeout(function () {
            if (state.outbox.get(item.id) === item) sendFrame(item.frame);
          }, 2000);
          return;
        }
        var reason = {
          too_large: "Too long (max " + state.maxText + " characters)",
          no_such_user: "Not delivered: the user is offline",
          not_in_room: "Not delivered: you are not in this room",
        }[code] || f.message || code;
        failPending(f.ref, reason);
        return;
      }
      if (code === "bad_room") {
        showJoinError("That room name is not allowed.");
        return;
      }
      if (code === "no_such_user" && state.active && state.active.indexOf("dm:") === 0) {
        toast(f.message || "That user is offline.");
        var c = getConv(state.active, false);
        if (c) {
          c.loadingOlder = false;
          schedule(c);
        }
        return;
      }
      toast(f.message || "Error: " + code);
    },
  };

  function applyPage(conv, f) {
    var scroller = el.scroller;
    var isActive = conv.key === state.active;
    var before = isActive ? scroller.scrollHeight - scroller.scrollTop : 0;
    (f.messages || []).forEach(function (m) {
      addMessage(conv, m, false);
    });
    conv.more = !!f.more;
    conv.loadingOlder = false;
    conv.loaded = true;
    if (isActive) {
      conv.rendered = null; // older messages are not "new messages"
      renderMessages();
      // Keep what the reader was looking at in place.
      if (conv.initialShown) scroller.scrollTop = scroller.scrollHeight - before;
      else scrollToBottom();
      conv.initialShown = true;
    }
  }

  function onFrame(ev) {
    var f;
    try {
      f = JSON.parse(ev.data);
    } catch (e) {
      return;
    }
    if (!f || typeof f.type !== "string") return;
    // Any frame proves the connection alive.
    if (state.pongTimer && f.type !== "pong") {
      clearTimeout(state.pongTimer);
      state.pongTimer = null;
    }
    var fn = handlers[f.type];
    if (fn) fn(f);
  }

  // ----------------------------------------------------------- connection
  function wsUrl(name) {
    var u = new URL("ws", window.location.href);
    u.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
    u.search = "?name=" + encodeURIComponent(name);
    u.hash = "";
    return u.href;
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = null;
    if (state.ws) return;
    setConn("connecting");
    var ws;
    try {
      ws = new WebSocket(wsUrl(state.name), SUBPROTOCOL);
    } catch (e) {
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    state.nameError = null;
    ws.onmessage = function (ev) {
      if (state.ws === ws) onFrame(ev);
    };
    ws.onopen = function () {
      if (state.ws !== ws) return;
      if (ws.protocol && ws.protocol !== SUBPROTOCOL) {
        ws.close(1000);
      }
      // state becomes "open" on welcome
    };
    ws.onclose = function (ev) {
      if (state.ws !== ws) return;
      state.ws = null;
      stopHeartbeat();
      state.convs.forEach(function (c) {
        c.joined = false;
        c.loadingOlder = false;
        c.catchingUp = false;
        c.typing.clear();
      });
      if (state.signedOut) return;
      if ((ev.code === 4409 || ev.code === 4400 || state.nameError) && !state.welcomed) {
        var msg =
          ev.code === 4400 || state.nameError === "bad_name"
            ? "That name is not allowed. Use 1–32 letters, digits, _ - or ., not starting with guest-."
            : "The name “" + state.name + "” is already taken. Pick another one.";
        signOut(msg);
        return;
      }
      scheduleReconnect(ev.code === 4409);
    };
  }

  function scheduleReconnect(nameBusy) {
    var exp = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * Math.pow(2, state.attempt));
    // "Equal jitter": half fixed, half random, so clients spread out.
    var delay = Math.round(exp / 2 + Math.random() * (exp / 2));
    if (state.holdUntil) {
      delay = Math.max(delay, state.holdUntil - Date.now());
      state.holdUntil = 0;
    }
    state.attempt += 1;
    state.reconnectAt = Date.now() + delay;
    state.nameBusy = !!nameBusy;
    setConn("waiting");
    if (!state.welcomed) {
      el.loginError.textContent = "Can't reach the chat server. Retrying in " + Math.ceil(delay / 1000) + " s…";
    }
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = setTimeout(connect, delay);
    updateBanner();
  }

  function reconnectNow() {
    if (state.signedOut || state.ws) return;
    state.attempt = 0;
    connect();
  }

  function startHeartbeat() {
    stopHeartbeat();
    var every = Math.max(5, Math.min(state.pingInterval, 25)) * 1000;
    state.heartbeatTimer = setInterval(function () {
      if (!sendFrame({ type: "ping", id: "hb-" + Date.now().toString(36) })) return;
      if (state.pongTimer) return;
      var ws = state.ws;
      state.pongTimer = setTimeout(function () {
        // No answer: the connection is dead even if the socket does not know.
        state.pongTimer = null;
        if (state.ws === ws && ws) {
          try {
            ws.close(4000, "heartbeat timeout");
          } catch (e) {
            /* ignore */
          }
          ws.onclose({ code: 4000 });
        }
      }, PONG_TIMEOUT_MS);
    }, every);
  }

  function stopHeartbeat() {
    clearInterval(state.heartbeatTimer);
    clearTimeout(state.pongTimer);
    state.heartbeatTimer = null;
    state.pongTimer = null;
  }

  function setConn(s) {
    state.conn = s;
    el.connDot.dataset.state = s;
    el.connDot.setAttribute(
      "aria-label",
      { open: "Connected", connecting: "Connecting", waiting: "Disconnected", idle: "Offline" }[s] || s
    );
    el.connDot.title = el.connDot.getAttribute("aria-label");
    el.app.dataset.conn = s;
    updateBanner();
  }

  function updateBanner() {
    clearTimeout(updateBanner.timer);
    if (state.conn === "open" || state.conn === "idle" || !state.welcomed) {
      el.banner.hidden = true;
      return;
    }
    el.banner.hidden = false;
    if (state.conn === "connecting") {
      el.bannerText.textContent = "Reconnecting…";
      el.bannerRetry.hidden = true;
    } else {
      var secs = Math.max(0, Math.ceil((state.reconnectAt - Date.now()) / 1000));
      el.bannerText.textContent =
        (state.nameBusy ? "Waiting for your previous session to end. " : "Connection lost. ") +
        "Reconnecting" + (secs > 0 ? " in " + secs + " s…" : "…");
      el.bannerRetry.hidden = false;
      updateBanner.timer = setTimeout(updateBanner, 1000);
    }
  }

  // ------------------------------------------------------------ rendering
  var dirty = new Set();
  var renderTimer = null;
  var stickNext = false;

  function schedule(conv, opts) {
    if (conv) dirty.add(conv.key);
    if (opts && opts.stick) stickNext = true;
    if (renderTimer) return;
    renderTimer = setTimeout(flushRender, 0);
  }

  function flushRender() {
    renderTimer = null;
    if (state.active && dirty.has(state.active)) {
      renderMessages();
      renderMembers();
      renderTyping();
    }
    dirty.clear();
    renderSidebar();
  }

  function renderAll() {
    renderSidebar();
    renderHeader();
    renderMessages();
    renderMembers();
    renderTyping();
    updateComposer();
  }

  function activate_(key) {
    var prevConv = state.active && getConv(state.active, false);
    if (prevConv) prevConv.scrollPos = atBottom() ? null : el.scroller.scrollTop;
    state.active = key;
    var conv = key && getConv(key, false);
    if (conv) conv.unread = 0;
    renderAll();
    if (conv && conv.scrollPos != null) el.scroller.scrollTop = conv.scrollPos;
    else scrollToBottom();
    if (conv) conv.initialShown = conv.loaded;
    document.body.classList.remove("show-sidebar", "show-members");
    el.toggleSidebar.setAttribute("aria-expanded", "false");
    el.toggleMembers.setAttribute("aria-expanded", "false");
  }

  function convLabel(conv) {
    return conv.kind === "room" ? "#" + conv.id : conv.id;
  }

  function renderSidebar() {
    var totalUnread = 0;
    function fill(list, keys) {
      var nodes = keys.map(function (key) {
        var conv = state.convs.get(key);
        totalUnread += conv.unread;
        var li = h("li");
        var b = h("button", "conv");
        b.type = "button";
        b.dataset.key = key;
        b.dataset.kind = conv.kind;
        b.dataset.id = conv.id;
        if (key === state.active) b.setAttribute("aria-current", "page");
        if (conv.kind === "dm") b.appendChild(avatar(conv.id, "tiny"));
        else b.appendChild(h("span", "hash", "#")).setAttribute("aria-hidden", "true");
        b.appendChild(h("span", "conv-name", conv.id));
        if (conv.unread > 0) {
          var badge = h("span", "badge", conv.unread > 99 ? "99+" : conv.unread);
          badge.setAttribute("aria-label", conv.unread + " unread");
          b.appendChild(badge);
          b.classList.add("has-unread");
        }
        li.appendChild(b);
        return li;
      });
      list.replaceChildren.apply(list, nodes);
    }
    fill(el.roomList, state.order);
    fill(el.dmList, state.dmOrder);
    el.dmEmpty.hidden = state.dmOrder.length > 0;
    document.title = (totalUnread ? "(" + totalUnread + ") " : "") + "chatd";
  }

  function renderHeader() {
    var conv = state.active && getConv(state.active, false);
    el.convTitle.textContent = conv ? convLabel(conv) : "No conversation";
    el.leaveRoom.hidden = !conv;
    el.leaveRoom.textContent = conv && conv.kind === "dm" ? "Close" : "Leave";
    el.leaveRoom.setAttribute(
      "aria-label",
      conv ? (conv.kind === "dm" ? "Close conversation with " + conv.id : "Leave room " + conv.id) : ""
    );
    el.convSub.textContent = conv
      ? conv.kind === "room"
        ? conv.members.size + (conv.members.size === 1 ? " member" : " members")
        : "Direct message"
      : "";
    el.main.dataset.kind = conv ? conv.kind : "";
  }

  function updateComposer() {
    var conv = state.active && getConv(state.active, false);
    el.composerInput.disabled = !conv;
    el.send.disabled = !conv;
    el.composerInput.placeholder = conv ? "Message " + convLabel(conv) : "Join a room to start chatting";
  }

  function atBottom() {
    var s = el.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 48;
  }

  function scrollToBottom() {
    el.scroller.scrollTop = el.scroller.scrollHeight;
    el.jumpNew.hidden = true;
  }

  function itemKey(item) {
    return item.seq != null ? "s" + item.seq : "p" + item.id;
  }

  function messageEl(conv, item) {
    var li = h("li", "msg");
    var av = avatar(item.from);
    var body = h("div", "msg-body");
    var head = h("div", "msg-head");
    var who = h("span", "msg-from", item.name || item.from);
    var time = h("time", "msg-time");
    head.append(who, time);
    var text = h("div", "msg-text");
    renderText(text, item.text);
    var status = h("span", "msg-status");
    body.append(head, text, status);
    li.append(av, body);
    li._parts = { time: time, status: status };
    return li;
  }

  function updateMessageEl(li, item) {
    li.dataset.from = item.from;
    if (item.seq != null) li.dataset.seq = String(item.seq);
    else delete li.dataset.seq;
    if (item.id) li.dataset.id = item.id;
    li.dataset.status = item.status;
    li.classList.toggle("mine", item.from === state.user);
    var d = new Date(item.ts);
    li._parts.time.textContent = fmtTime(item.ts);
    li._parts.time.dateTime = d.toISOString();
    li._parts.time.title = d.toLocaleString();
    var st = li._parts.status;
    if (item.from !== state.user) {
      st.textContent = "";
      st.hidden = true;
      return;
    }
    st.hidden = false;
    st.replaceChildren();
    if (item.status === "pending") {
      st.textContent = "Sending…";
    } else if (item.status === "sent") {
      st.textContent = "✓ Sent";
    } else {
      st.textContent = "Not sent: " + (item.error || "error") + " ";
      var retry = h("button", "link small", "Retry");
      retry.type = "button";
      retry.addEventListener("click", function () {
        retryItem(item);
      });
      var discard = h("button", "link small", "Discard");
      discard.type = "button";
      discard.addEventListener("click", function () {
        var conv = getConv(item.convKey, false);
        if (!conv) return;
        var i = conv.pending.indexOf(item);
        if (i >= 0) conv.pending.splice(i, 1);
        schedule(conv);
      });
      st.append(retry, " ", discard);
    }
  }

  function renderMessages() {
    var conv = state.active && getConv(state.active, false);
    var stick = stickNext || atBottom();
    stickNext = false;
    if (!conv) {
      el.messages.replaceChildren();
      el.loadOlder.hidden = true;
      el.historyStart.hidden = true;
      return;
    }
    var seqs = Array.from(conv.msgs.keys()).sort(function (a, b) {
      return a - b;
    });
    var notes = conv.notes.slice();
    var nodes = [];
    var keep = new Map();
    var prev = null;
    var lastDay = null;
    var ni = 0;

    function pushNotesUpTo(seq) {
      while (ni < notes.length && notes[ni].afterSeq < seq) {
        var n = notes[ni++];
        dayBreak(n.ts);
        var nk = "n" + n.afterSeq + "." + n.n;
        var nel = conv.els.get(nk) || h("li", "note", n.text);
        keep.set(nk, nel);
        nodes.push(nel);
        prev = null;
      }
    }

    function dayBreak(ts) {
      var day = new Date(ts).toDateString();
      if (day === lastDay) return;
      var dk = "d" + day;
      var dEl = conv.els.get(dk);
      if (!dEl) {
        dEl = h("li", "day");
        dEl.appendChild(h("span", null, fmtDay(ts)));
      }
      keep.set(dk, dEl);
      nodes.push(dEl);
      lastDay = day;
      prev = null;
    }

    var lastMine = null;
    function pushItem(item) {
      dayBreak(item.ts);
      var k = itemKey(item);
      var li = conv.els.get(k);
      if (!li) li = messageEl(conv, item);
      updateMessageEl(li, item);
      // Group consecutive messages of one sender within 5 minutes.
      var grouped = prev && prev.from === item.from && item.ts - prev.ts < 300000;
      li.classList.toggle("grouped", !!grouped);
      li.classList.remove("last-mine");
      if (item.from === state.user) lastMine = li;
      keep.set(k, li);
      nodes.push(li);
      prev = item;
    }

    seqs.forEach(function (seq) {
      pushNotesUpTo(seq);
      pushItem(conv.msgs.get(seq));
    });
    pushNotesUpTo(Infinity);
    conv.pending.forEach(pushItem);
    if (lastMine) lastMine.classList.add("last-mine");
    conv.els = keep;

    el.messages.replaceChildren.apply(el.messages, nodes);
    el.loadOlder.hidden = !conv.more && conv.loaded;
    el.loadOlder.disabled = conv.loadingOlder;
    el.loadOlder.textContent = conv.loadingOlder ? "Loading…" : "Load earlier messages";
    el.historyStart.hidden = conv.more || !conv.loaded || conv.loadingOlder;
    if (!conv.loaded && !conv.loadingOlder) el.loadOlder.hidden = true;
    var count = conv.msgs.size + conv.pending.length;
    if (stick) scrollToBottom();
    else if (conv.rendered != null && count > conv.rendered) el.jumpNew.hidden = false;
    conv.rendered = count;
    renderHeader();
  }

  function renderMembers() {
    var conv = state.active && getConv(state.active, false);
    var users = [];
    if (conv && conv.kind === "room") users = Array.from(conv.members);
    else if (conv) users = [state.user, conv.id];
    users.sort(function (a, b) {
      if (a === state.user) return -1;
      if (b === state.user) return 1;
      return a.localeCompare(b);
    });
    var online = onlineUsers();
    var nodes = users.map(function (u) {
      var li = h("li", "member");
      li.dataset.user = u;
      var isOnline = u === state.user ? state.conn === "open" : online.has(u);
      li.dataset.presence = isOnline ? "online" : "unknown";
      var b = h(u === state.user ? "span" : "button", "member-btn");
      if (u !== state.user) {
        b.type = "button";
        b.title = "Send a direct message to " + u;
        b.setAttribute("aria-label", u + (isOnline ? ", online" : "") + ". Send a direct message");
        b.addEventListener("click", function () {
          openDm(u);
        });
      }
      var av = avatar(u);
      var dot = h("span", "presence-dot");
      dot.setAttribute("aria-hidden", "true");
      av.appendChild(dot);
      b.append(av, h("span", "member-name", u));
      if (u === state.user) b.appendChild(h("span", "muted small", "(you)"));
      li.appendChild(b);
      return li;
    });
    el.members.replaceChildren.apply(el.members, nodes);
    el.memberCount.textContent = users.length ? String(users.length) : "";
  }

  function onlineUsers() {
    var s = new Set();
    state.convs.forEach(function (c) {
      if (c.kind === "room" && c.joined) c.members.forEach(function (u) {
        s.add(u);
      });
    });
    return s;
  }

  function renderTyping() {
    var conv = state.active && getConv(state.active, false);
    var now = Date.now();
    var names = [];
    if (conv) {
      conv.typing.forEach(function (exp, u) {
        if (exp > now) names.push(u);
        else conv.typing.delete(u);
      });
    }
    names.sort();
    var text = "";
    if (names.length === 1) text = names[0] + " is typing…";
    else if (names.length === 2) text = names[0] + " and " + names[1] + " are typing…";
    else if (names.length > 2) text = "Several people are typing…";
    if (el.typing.textContent !== text) el.typing.textContent = text;
    el.typing.classList.toggle("on", !!text);
    clearTimeout(renderTyping.timer);
    if (names.length) renderTyping.timer = setTimeout(renderTyping, 500);
  }

  // ----------------------------------------------------------- UI actions
  function showApp() {
    el.login.hidden = true;
    el.app.hidden = false;
    el.composerInput.focus();
  }

  function showJoinError(text) {
    el.joinError.textContent = text;
  }

  function signIn(name, room) {
    state.name = name;
    state.signedOut = false;
    state.welcomed = false;
    state.attempt = 0;
    state.convs.clear();
    state.order = [];
    state.dmOrder = [];
    state.outbox.clear();
    state.active = null;
    var rooms = load("chatd.rooms." + name) || [];
    if (room && rooms.indexOf(room) < 0) rooms.unshift(room);
    rooms.forEach(function (r) {
      if (typeof r === "string" && ROOM_RE.test(r)) getConv(roomKey(r), true);
    });
    (load("chatd.dms." + name) || []).forEach(function (u) {
      if (typeof u === "string" && u !== name) getConv(dmKey(u), true);
    });
    state.active = room ? roomKey(room) : state.order[0] || state.dmOrder[0] || null;
    el.loginSubmit.disabled = true;
    el.loginSubmit.textContent = "Connecting…";
    connect();
  }

  function signOut(errorText) {
    state.signedOut = true;
    clearTimeout(state.reconnectTimer);
    stopHeartbeat();
    var ws = state.ws;
    state.ws = null;
    if (ws) {
      try {
        ws.close(1000);
      } catch (e) {
        /* ignore */
      }
    }
    state.welcomed = false;
    setConn("idle");
    el.app.hidden = true;
    el.login.hidden = false;
    el.loginSubmit.disabled = false;
    el.loginSubmit.textContent = "Join chat";
    el.loginError.textContent = errorText || "";
    el.loginName.value = state.name || "";
    if (errorText) el.loginName.setAttribute("aria-invalid", "true");
    el.loginName.focus();
    el.loginName.select();
  }

  function submitComposer() {
    var conv = state.active && getConv(state.active, false);
    if (!conv) return;
    var text = el.composerInput.value;
    if (!text.trim()) return;
    if (Array.from(text).length > state.maxText) {
      el.composerError.textContent = "Message is too long (max " + state.maxText + " characters).";
      return;
    }
    el.composerError.textContent = "";
    el.composerInput.value = "";
    autosize();
    queueMessage(conv, text);
  }

  function autosize() {
    var t = el.composerInput;
    t.style.height = "auto";
    t.style.height = Math.min(t.scrollHeight, 160) + "px";
  }

  function bind() {
    [
      "login", "login-form", "login-name", "login-room", "login-error", "login-submit", "app",
      "banner", "banner-text", "banner-retry", "conn-dot", "me-avatar", "me-name", "logout",
      "room-list", "join-form", "join-room", "join-error", "dm-list", "dm-empty", "main",
      "conv-title", "conv-sub", "leave-room", "scroller", "load-older", "history-start",
      "messages", "jump-new", "typing", "composer", "composer-input", "send", "composer-error",
      "members", "member-count", "toast", "toggle-sidebar", "toggle-members",
    ].forEach(function (id) {
      el[id.replace(/-(\w)/g, function (_, c) {
        return c.toUpperCase();
      })] = $(id);
    });

    var saved = load("chatd.name");
    if (typeof saved === "string") el.loginName.value = saved;
    var params = new URLSearchParams(window.location.search);
    if (params.get("room") && ROOM_RE.test(params.get("room"))) el.loginRoom.value = params.get("room");

    el.loginForm.addEventListener("submit", function (e) {
      e.preventDefault();
      var name = el.loginName.value.trim();
      var room = el.loginRoom.value.trim().replace(/^#/, "");
      if (!NAME_RE.test(name) || name.indexOf("guest-") === 0) {
        el.loginError.textContent =
          "Use 1–32 letters, digits, _ - or . (names starting with guest- are reserved).";
        el.loginName.setAttribute("aria-invalid", "true");
        el.loginName.focus();
        return;
      }
      if (room && !ROOM_RE.test(room)) {
        el.loginError.textContent = "Room names are 1–64 letters, digits or _ - . : #";
        el.loginRoom.focus();
        return;
      }
      el.loginError.textContent = "";
      el.loginName.removeAttribute("aria-invalid");
      signIn(name, room);
    });

    el.logout.addEventListener("click", function () {
      signOut("");
    });

    el.joinForm.addEventListener("submit", function (e) {
      e.preventDefault();
      var room = el.joinRoom.value.trim().replace(/^#/, "");
      if (!room) return;
      if (!ROOM_RE.test(room)) {
        showJoinError("Room names are 1–64 letters, digits or _ - . : #");
        return;
      }
      showJoinError("");
      el.joinRoom.value = "";
      joinRoom(room, true);
      el.composerInput.focus();
    });

    function onConvClick(e) {
      var b = e.target.closest("button.conv");
      if (!b) return;
      activate_(b.dataset.key);
      el.composerInput.focus();
    }
    el.roomList.addEventListener("click", onConvClick);
    el.dmList.addEventListener("click", onConvClick);

    el.leaveRoom.addEventListener("click", function () {
      var conv = state.active && getConv(state.active, false);
      if (!conv) return;
      if (conv.kind === "room") leaveRoom(conv);
      else closeConv(conv);
    });

    el.loadOlder.addEventListener("click", function () {
      var conv = state.active && getConv(state.active, false);
      if (conv) requestOlder(conv);
    });

    el.scroller.addEventListener("scroll", function () {
      if (atBottom()) el.jumpNew.hidden = true;
    });
    el.jumpNew.addEventListener("click", scrollToBottom);

    el.composer.addEventListener("submit", function (e) {
      e.preventDefault();
      submitComposer();
      el.composerInput.focus();
    });
    el.composerInput.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        submitComposer();
      }
    });
    el.composerInput.addEventListener("input", function () {
      autosize();
      el.composerError.textContent = "";
      var conv = state.active && getConv(state.active, false);
      if (conv && el.composerInput.value.trim()) maybeSendTyping(conv);
    });

    el.bannerRetry.addEventListener("click", reconnectNow);
    window.addEventListener("online", reconnectNow);
    document.addEventListener("visibilitychange", function () {
      if (document.hidden) return;
      var conv = state.active && getConv(state.active, false);
      if (conv && conv.unread) {
        conv.unread = 0;
        renderSidebar();
      }
      if (state.conn === "waiting") reconnectNow();
    });

    el.toggleSidebar.addEventListener("click", function () {
      var on = document.body.classList.toggle("show-sidebar");
      document.body.classList.remove("show-members");
      el.toggleSidebar.setAttribute("aria-expanded", String(on));
    });
    el.toggleMembers.addEventListener("click", function () {
      var on = document.body.classList.toggle("show-members");
      document.body.classList.remove("show-sidebar");
      el.toggleMembers.setAttribute("aria-expanded", String(on));
    });
    function closeDrawers() {
      document.body.classList.remove("show-sidebar", "show-members");
      el.toggleSidebar.setAttribute("aria-expanded", "false");
      el.toggleMembers.setAttribute("aria-expanded", "false");
    }
    document.addEventListener("keydown", function (e) {
      if (e.key === "Escape") closeDrawers();
    });
    // On narrow screens a tap outside an open drawer closes it.
    document.addEventListener("click", function (e) {
      var b = document.body.classList;
      if (!b.contains("show-sidebar") && !b.contains("show-members")) return;
      if (e.target.closest("#sidebar, #members-panel, #toggle-sidebar, #toggle-members")) return;
      closeDrawers();
    });

    setConn("idle");
    el.loginName.focus();
  }

  // Hooks for tests and debugging in the browser console.
  window.chatd = {
    state: state,
    reconnectNow: reconnectNow,
    // Closes the connection as a network failure would; the client then
    // reconnects by itself, no sooner than holdMs from now.
    disconnect: function (holdMs) {
      if (!state.ws) return;
      state.holdUntil = Date.now() + (holdMs || 0);
      state.ws.close(4000, "closed by client");
    },
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", bind);
  else bind();
})();
