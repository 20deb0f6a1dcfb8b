// chatd admin page: polls GET /api/stats with the API key the operator typed.
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

  function show(loggedIn, message) {
    $("login").hidden = loggedIn;
    $("dash").hidden = !loggedIn;
    $("logout").hidden = !loggedIn;
    $("login-error").textContent = message || "";
  }

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
