// chatd admin page: polls GET /api/stats with the API key the operator typed; the
// Moderation tab lists /api/moderation/queue (with each message's context), acts on
// entries (dismiss, recall, mute, ban) and shows /api/moderation/audit.
// No dependencies; everything from the server is shown with textContent.
"use strict";
(function () {
  var POLL_MS = 2000;
  var KEY_STORE = "chatd-admin-key";
  var $ = function (id) { return document.getElementById(id); };
  var key = sessionStorage.getItem(KEY_STORE);
  var previous = null;
  var timer = null;

  function cell(row, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
  }

  function fill(tbody, rows) {
    tbody.textContent = "";
    rows.forEach(function (values) {
      var tr = document.createElement("tr");
      values.forEach(function (v, i) { cell(tr, String(v), i && typeof v === "number" ? "num" : ""); });
      tbody.appendChild(tr);
    });
  }

  function render(s) {
    $("conn-v1").textContent = s.connections["chatd.v1"];
    $("conn-relay").textContent = s.connections.relay;
    $("users").textContent = s.users;
    var rooms = Object.keys(s.rooms).sort();
    $("room-count").textContent = rooms.length;
    $("messages").textContent = s.counters.messages_stored;
    $("broker").textContent = s.broker_healthy ? "healthy" : "UNHEALTHY";
    $("broker").className = s.broker_healthy ? "" : "bad";
    $("uptime").textContent = Math.round(s.uptime) + " s";
    if (previous) {
      var dt = (s.now - previous.now) / 1000;
      if (dt > 0) {
        $("rate-messages").textContent =
          ((s.counters.messages_stored - previous.counters.messages_stored) / dt).toFixed(1);
        $("rate-deliveries").textContent =
          ((s.counters.deliveries - previous.counters.deliveries) / dt).toFixed(1);
      }
    } else {
      $("rate-messages").textContent = $("rate-deliveries").textContent = "…";
    }
    previous = s;
    fill($("rooms"), rooms.map(function (r) {
      return [r, s.rooms[r].length, s.rooms[r].join(", ")];
    }));
    fill($("error-counts"), Object.keys(s.counters.errors).sort().map(function (c) {
      return [c, s.counters.errors[c]];
    }));
    fill($("recent-errors"), s.recent_errors.slice().reverse().map(function (e) {
      return [new Date(e.ts).toLocaleTimeString(), e.code, e.message];
    }));
  }

  var tab = "dash";

  function show(loggedIn, message) {
    $("login").hidden = loggedIn;
    $("tabs").hidden = !loggedIn;
    $("dash").hidden = !loggedIn || tab !== "dash";
    $("moderation").hidden = !loggedIn || tab !== "moderation";
    $("logout").hidden = !loggedIn;
    $("login-error").textContent = message || "";
  }

  // moderation

  function api(method, path, body) {
    var init = { method: method, headers: { Authorization: "apikey " + key }, cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (r) {
      return r.json().then(function (b) {
        if (!r.ok) throw { message: (b && b.message) || "HTTP " + r.status };
        return b;
      });
    });
  }

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function itemText(item) {
    if (!item) return "";
    if (item.type === "message" || item.type === "dm") return item.text || "(recalled)";
    return "[" + item.type + (item.kind ? " " + item.kind : "") + "]";
  }

  function contextOf(entry) {
    var details = el("details", null, "context");
    details.appendChild(el("summary", "context"));
    (entry.context || []).forEach(function (item) {
      var who = item.from || item.by || item.user || "";
      var line = el("div", "#" + item.seq + " " + who + ": " + itemText(item));
      if (item.seq === entry.seq) line.className = "target";
      details.appendChild(line);
    });
    return details;
  }

  function act(entry, action) {
    var body = { action: action };
    if (action === "mute" || action === "ban") {
      body.seconds = parseInt($("action-seconds").value, 10);
    }
    $("queue-error").textContent = "";
    api("POST", "/api/moderation/queue/" + entry.id, body)
      .then(loadModeration)
      .catch(function (e) { $("queue-error").textContent = e.message; loadModeration(); });
  }

  function renderQueue(entries) {
    var tbody = $("queue");
    tbody.textContent = "";
    entries.forEach(function (entry) {
      var tr = el("tr");
      tr.dataset.id = entry.id;
      tr.appendChild(el("td", entry.id));
      tr.appendChild(el("td", entry.source === "report" ? "report by " + entry.reporter : "content check"));
      tr.appendChild(el("td", entry.room ? entry.room : "DM " + (entry.users || []).join(" / ")));
      tr.appendChild(el("td", entry.sender));
      var message = el("td");
      message.appendChild(el("div", itemText(entry.message), "entry-text"));
      message.appendChild(contextOf(entry));
      tr.appendChild(message);
      tr.appendChild(el("td", entry.reason || entry.label || "", "entry-text"));
      var state = entry.state;
      if (entry.resolution) state += " (" + entry.resolution.action + " by " + entry.resolution.by + ")";
      tr.appendChild(el("td", state));
      var actions = el("td", null, "actions");
      if (entry.state === "open") {
        ["dismiss", "recall", "mute", "ban"].forEach(function (action) {
          var b = el("button", action[0].toUpperCase() + action.slice(1));
          b.type = "button";
          b.dataset.action = action;
          b.addEventListener("click", function () { act(entry, action); });
          actions.appendChild(b);
        });
      }
      tr.appendChild(actions);
      tbody.appendChild(tr);
    });
  }

  function renderAudit(entries) {
    var skip = { id: 1, ts: 1, by: 1, action: 1, target: 1 };
    fill($("audit"), entries.map(function (e) {
      var details = Object.keys(e).filter(function (k) { return !skip[k]; }).sort()
        .map(function (k) { return k + "=" + (typeof e[k] === "object" ? JSON.stringify(e[k]) : e[k]); });
      return [new Date(e.ts).toLocaleString(), e.by, e.action, e.target || "", details.join(" ")];
    }));
  }

  function loadModeration() {
    var state = $("queue-state").value;
    return Promise.all([
      api("GET", "/api/moderation/queue?state=" + encodeURIComponent(state)),
      api("GET", "/api/moderation/audit")
    ]).then(function (answers) {
      renderQueue(answers[0].entries);
      renderAudit(answers[1].entries);
    }).catch(function (e) { $("queue-error").textContent = e.message; });
  }

  function select(which) {
    tab = which;
    $("tab-dash").setAttribute("aria-selected", String(which === "dash"));
    $("tab-moderation").setAttribute("aria-selected", String(which === "moderation"));
    show(true);
    if (which === "moderation") loadModeration();
  }

  $("tab-dash").addEventListener("click", function () { select("dash"); });
  $("tab-moderation").addEventListener("click", function () { select("moderation"); });
  $("queue-state").addEventListener("change", loadModeration);
  $("queue-refresh").addEventListener("click", loadModeration);

  function poll() {
    fetch("/api/stats", { headers: { Authorization: "apikey " + key }, cache: "no-store" })
      .then(function (r) {
        if (r.status === 401 || r.status === 403) {
          return r.json().then(function (body) { throw { auth: true, message: body.message }; });
        }
        if (!r.ok) throw { message: "HTTP " + r.status };
        return r.json();
      })
      .then(function (s) {
        show(true);
        render(s);
        $("status").textContent = "updated " + new Date().toLocaleTimeString();
        $("status").className = "";
        timer = setTimeout(poll, POLL_MS);
      })
      .catch(function (e) {
        if (e && e.auth) {
          sessionStorage.removeItem(KEY_STORE);
          key = null;
          show(false, e.message || "wrong API key");
          return;
        }
        $("status").textContent = "cannot reach chatd (" + ((e && e.message) || e) + "), retrying";
        $("status").className = "bad";
        timer = setTimeout(poll, POLL_MS);
      });
  }

  $("login").addEventListener("submit", function (ev) {
    ev.preventDefault();
    key = $("key").value;
    sessionStorage.setItem(KEY_STORE, key);
    previous = null;
    clearTimeout(timer);
    poll();
  });
  $("logout").addEventListener("click", function () {
    sessionStorage.removeItem(KEY_STORE);
    key = null;
    clearTimeout(timer);
    show(false);
  });

  if (key) poll(); else show(false);
})();
