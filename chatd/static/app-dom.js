/*
 * chatd web client, DOM helpers shared by the two screens: the anonymous chat
 * (static/app-view.js) and the messenger of token users (static/app-messenger.js).
 *
 * User data only ever goes into the page as text nodes, textContent or
 * attributes set through the DOM API, never with innerHTML.
 */
(function () {
  "use strict";

  function h(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text != null) node.textContent = String(text);
    return node;
  }

  // A button of type "button" (never a form submit) with a click handler.
  function button(cls, text, onClick, label) {
    var b = h("button", cls, text);
    b.type = "button";
    if (label) b.setAttribute("aria-label", label);
    if (onClick) b.addEventListener("click", onClick);
    return b;
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

  // A time in a list: the clock today, else the date.
  function fmtShort(ts) {
    if (!ts) return "";
    var d = new Date(ts);
    if (d.toDateString() === new Date().toDateString()) return fmtTime(ts);
    return d.toLocaleDateString([], { month: "short", day: "numeric" });
  }

  // A stable colour per user, for avatars.
  function hue(s) {
    var x = 0;
    for (var i = 0; i < s.length; i++) x = (x * 31 + s.charCodeAt(i)) >>> 0;
    return x % 360;
  }

  function avatar(user, cls) {
    var a = h("span", "avatar" + (cls ? " " + cls : ""), Array.from(user || "?")[0] || "?");
    a.style.setProperty("--h", String(hue(user || "?")));
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

  // A toast function on element `node`: shows a text for 5 s.
  function toaster(node) {
    var timer = null;
    return function (text) {
      node.textContent = text;
      node.hidden = false;
      clearTimeout(timer);
      timer = setTimeout(function () {
        node.hidden = true;
      }, 5000);
    };
  }

  // The elements with the given ids, as {camelCaseId: element}.
  function byIds(ids) {
    var el = {};
    ids.forEach(function (id) {
      el[id.replace(/-(\w)/g, function (_, c) {
        return c.toUpperCase();
      })] = document.getElementById(id);
    });
    return el;
  }

  // An avatar with a presence dot (member lists).
  function memberAvatar(user) {
    var av = avatar(user);
    var dot = h("span", "presence-dot");
    dot.setAttribute("aria-hidden", "true");
    av.appendChild(dot);
    return av;
  }

  // A composer grows with its text, up to 160 px.
  function autosize(t) {
    t.style.height = "auto";
    t.style.height = Math.min(t.scrollHeight, 160) + "px";
  }

  var CONN_LABELS = { open: "Connected", connecting: "Connecting", waiting: "Disconnected", idle: "Offline" };

  // The connection dot: its state and a label for screen readers.
  function connDot(node, state) {
    var label = CONN_LABELS[state] || state;
    node.dataset.state = state;
    node.setAttribute("aria-label", label);
    node.title = label;
  }

  // The seconds until a reconnect at `at` (ms), never below 0.
  function secsUntil(at) {
    return Math.max(0, Math.ceil((at - Date.now()) / 1000));
  }

  // " in N s…" before a reconnect at `at`, "…" when it is due.
  function retryIn(at) {
    var secs = secsUntil(at);
    return secs > 0 ? " in " + secs + " s…" : "…";
  }

  // Whether a scroller is (nearly) at its bottom.
  function atBottom(s) {
    return s.scrollHeight - s.scrollTop - s.clientHeight < 48;
  }

  // "bob is typing…" for the users typing now (sorted), "" for nobody.
  function typingText(names) {
    if (names.length === 1) return names[0] + " is typing…";
    if (names.length === 2) return names[0] + " and " + names[1] + " are typing…";
    if (names.length > 2) return "Several people are typing…";
    return "";
  }

  // A size in bytes for people: "812 B", "4.2 KB", "12 MB".
  function fmtSize(n) {
    if (typeof n !== "number" || !(n >= 0)) return "";
    if (n < 1000) return n + " B";
    var units = ["KB", "MB", "GB"];
    var v = n;
    var i = -1;
    do {
      v /= 1000;
      i++;
    } while (v >= 1000 && i < units.length - 1);
    return (v < 10 ? v.toFixed(1) : String(Math.round(v))) + " " + units[i];
  }

  window.ChatdDom = {
    typingText: typingText,
    fmtSize: fmtSize,
    h: h,
    button: button,
    fmtTime: fmtTime,
    fmtDay: fmtDay,
    fmtShort: fmtShort,
    avatar: avatar,
    memberAvatar: memberAvatar,
    autosize: autosize,
    connDot: connDot,
    secsUntil: secsUntil,
    retryIn: retryIn,
    renderText: renderText,
    toaster: toaster,
    byIds: byIds,
    atBottom: atBottom,
  };
})();
