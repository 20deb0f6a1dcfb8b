/*
 * chatd web client, view: renders the state of static/app-state.js into the
 * page and turns clicks and keys into its actions. The connection itself is
 * the shared chatd.v1 client (static/chatd-client.js, `window.ChatdClient`)
 * on its browser adapter (WebSocket, localStorage, window timers).
 *
 * User data is only ever put into the page with textContent / attributes set
 * through the DOM API, never with innerHTML.
 */
(function () {
  "use strict";

  var app = window.ChatdWebState.create({
    changed: schedule,
    sidebar: renderSidebar,
    conn: renderConn,
    welcomed: onWelcome,
    signedOut: showSignIn,
    joinError: showJoinError,
    toast: toast,
    typing: function (conv) {
      if (conv.key === state.active) renderTyping();
    },
    page: applyPage,
    watching: function (conv) {
      return conv.key === state.active && !document.hidden;
    },
  });
  var state = app.state;
  var getConv = app.getConv;

  // ------------------------------------------------------------------ DOM
  var dom = window.ChatdDom;
  var h = dom.h;
  var fmtTime = dom.fmtTime;
  var fmtDay = dom.fmtDay;
  var avatar = dom.avatar;
  var renderText = dom.renderText;
  var el = {};
  var showToast = null; // set in bind()
  function toast(text) {
    if (showToast) showToast(text);
  }

  function renderConn() {
    var s = state.conn;
    if (!el.connDot) return;
    dom.connDot(el.connDot, s);
    el.app.dataset.conn = s;
    if (s === "waiting" && !state.welcomed) {
      el.loginError.textContent =
        "Can't reach the chat server. Retrying in " + dom.secsUntil(state.reconnectAt) + " s…";
    }
    updateBanner();
    if (state.active) schedule(getConv(state.active, false));
  }

  function onWelcome(first) {
    el.meName.textContent = state.name;
    el.meAvatar.replaceWith((el.meAvatar = avatar(state.user)));
    if (first) {
      el.loginError.textContent = "";
      showApp();
    }
    renderAll();
  }

  // A page of history: keep what the reader was looking at in place.
  function applyPage(conv, apply) {
    var scroller = el.scroller;
    var isActive = conv.key === state.active;
    var before = isActive ? scroller.scrollHeight - scroller.scrollTop : 0;
    apply();
    if (isActive) {
      conv.rendered = null; // older messages are not "new messages"
      renderMessages();
      if (conv.initialShown) scroller.scrollTop = scroller.scrollHeight - before;
      else scrollToBottom();
      conv.initialShown = true;
    }
    schedule(conv);
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
      el.bannerText.textContent =
        (state.nameBusy ? "Waiting for your previous session to end. " : "Connection lost. ") +
        "Reconnecting" + dom.retryIn(state.reconnectAt);
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
    var conv = app.setActive(key);
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
    return dom.atBottom(el.scroller);
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
        app.retry(item);
      });
      var discard = h("button", "link small", "Discard");
      discard.type = "button";
      discard.addEventListener("click", function () {
        app.discard(item);
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
      b.append(dom.memberAvatar(u), h("span", "member-name", u));
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
    var text = dom.typingText(names);
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

  function openDm(user) {
    if (!user || user === state.user) return;
    activate_(app.openDm(user));
    el.composerInput.focus();
  }

  function showSignIn(errorText) {
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
    app.send(conv, text);
  }

  function autosize() {
    dom.autosize(el.composerInput);
  }

  // A token user's page: ?token= (kept in the tab's sessionStorage and taken
  // out of the address bar, so it is not in the history or a copied link).
  function pageToken() {
    var params = new URLSearchParams(window.location.search);
    var token = params.get("token");
    try {
      if (token) {
        window.sessionStorage.setItem("chatd.token", token);
        params.delete("token");
        var rest = params.toString();
        window.history.replaceState(null, "", window.location.pathname + (rest ? "?" + rest : "") + window.location.hash);
      } else {
        token = window.sessionStorage.getItem("chatd.token");
      }
    } catch (e) {
      /* storage disabled: the token only lives as long as the page */
    }
    return token || null;
  }

  function bind() {
    var token = pageToken();
    if (token) {
      window.ChatdMessenger.start(token);
      return;
    }
    el = dom.byIds([
      "login", "login-form", "login-name", "login-room", "login-error", "login-submit", "app",
      "banner", "banner-text", "banner-retry", "conn-dot", "me-avatar", "me-name", "logout",
      "room-list", "join-form", "join-room", "join-error", "dm-list", "dm-empty", "main",
      "conv-title", "conv-sub", "leave-room", "scroller", "load-older", "history-start",
      "messages", "jump-new", "typing", "composer", "composer-input", "send", "composer-error",
      "members", "member-count", "toast", "toggle-sidebar", "toggle-members",
    ]);
    showToast = dom.toaster(el.toast);

    var saved = null;
    try {
      saved = JSON.parse(window.localStorage.getItem("chatd.name"));
    } catch (e) {
      saved = null;
    }
    if (typeof saved === "string") el.loginName.value = saved;
    var params = new URLSearchParams(window.location.search);
    if (params.get("room") && app.ROOM_RE.test(params.get("room"))) el.loginRoom.value = params.get("room");

    el.loginForm.addEventListener("submit", function (e) {
      e.preventDefault();
      var name = el.loginName.value.trim();
      var room = el.loginRoom.value.trim().replace(/^#/, "");
      if (!app.NAME_RE.test(name) || name.indexOf("guest-") === 0) {
        el.loginError.textContent =
          "Use 1–32 letters, digits, _ - or . (names starting with guest- are reserved).";
        el.loginName.setAttribute("aria-invalid", "true");
        el.loginName.focus();
        return;
      }
      if (room && !app.ROOM_RE.test(room)) {
        el.loginError.textContent = "Room names are 1–64 letters, digits or _ - . : #";
        el.loginRoom.focus();
        return;
      }
      el.loginError.textContent = "";
      el.loginName.removeAttribute("aria-invalid");
      el.loginSubmit.disabled = true;
      el.loginSubmit.textContent = "Connecting…";
      app.signIn(name, room);
      renderConn();
    });

    el.logout.addEventListener("click", function () {
      app.signOut("");
    });

    el.joinForm.addEventListener("submit", function (e) {
      e.preventDefault();
      var room = el.joinRoom.value.trim().replace(/^#/, "");
      if (!room) return;
      if (!app.ROOM_RE.test(room)) {
        showJoinError("Room names are 1–64 letters, digits or _ - . : #");
        return;
      }
      showJoinError("");
      el.joinRoom.value = "";
      activate_(app.joinRoom(room));
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
      var wasActive = state.active === conv.key;
      var next = app.closeConv(conv);
      if (wasActive) activate_(next);
    });

    el.loadOlder.addEventListener("click", function () {
      var conv = state.active && getConv(state.active, false);
      if (conv) app.requestOlder(conv);
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
      if (conv && el.composerInput.value.trim()) app.typing(conv);
    });

    el.bannerRetry.addEventListener("click", app.reconnectNow);
    window.addEventListener("online", app.reconnectNow);
    document.addEventListener("visibilitychange", function () {
      if (document.hidden) return;
      var conv = state.active && getConv(state.active, false);
      if (conv && conv.unread) {
        conv.unread = 0;
        renderSidebar();
      }
      if (state.conn === "waiting") app.reconnectNow();
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

    renderConn();
    el.loginName.focus();
  }

  // Hooks for tests and debugging in the browser console.
  window.chatd = {
    state: state,
    reconnectNow: app.reconnectNow,
    // Closes the connection as a network failure would; the client then
    // reconnects by itself, no sooner than holdMs from now.
    disconnect: app.disconnect,
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", bind);
  else bind();
})();
