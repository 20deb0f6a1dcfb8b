/*
 * chatd web client, messenger screen: what a token user (the page opened with
 * ?token=) sees. The conversation list, the open conversation and room
 * management are rendered from the shared client's conversation store
 * (client.conversations, client.timeline(key); docs/miniprogram.md, "SDK:
 * conversations") through the messenger of static/app-state.js, whose pure
 * rules (previews, ticks, event lines, who may recall) this file only draws.
 *
 * User data only ever goes into the page as text (static/app-dom.js).
 */
(function () {
  "use strict";

  var dom = window.ChatdDom;
  var h = dom.h;
  var button = dom.button;
  var M = window.ChatdWebState.messenger;

  var app = null;
  var st = null;
  var el = {};
  var toast = null;
  var cache = new Map(); // item key -> {sig, li} of the open conversation
  var stick = false; // scroll to the bottom after the next render
  var renderTimer = null;
  var mention = null; // {start, prefix, list, index} while the @ picker is open
  var mentionAsk = 0; // the latest updateMentions: only its members answer may change the picker
  var windows = new Map(); // conversation key -> how many of its newest items are rendered
  var shownFrom = 0; // index in the open timeline of the first rendered item
  var shownFirst = null; // that item's key ("s<seq>", "p<id>")
  var fresh = new Map(); // media_id -> its GET /api/media/ID answer (URLs signed again)
  var recallTimer = null;
  var typingTimer = null;

  var IDS = [
    "messenger", "m-banner", "m-banner-text", "m-banner-retry", "m-conn-dot", "m-me-avatar",
    "m-me-name", "m-logout", "m-open-form", "m-open", "m-open-error", "m-new-room", "m-convs",
    "m-convs-empty", "m-main", "m-toggle-side", "m-title", "m-sub", "m-mute", "m-info-btn",
    "m-scroller", "m-earlier", "m-start", "m-items", "m-empty", "m-jump", "m-quote", "m-quote-who",
    "m-quote-text", "m-quote-cancel", "m-editing", "m-edit-cancel", "m-mentions", "m-composer",
    "m-input", "m-send", "m-error", "m-info", "m-info-name", "m-info-topic", "m-info-kind",
    "m-info-role", "m-edit-room", "m-room-title", "m-room-topic", "m-info-mute", "m-info-count",
    "m-info-members", "m-invite", "m-invite-user", "m-info-error", "m-leave", "m-create",
    "m-create-form", "m-create-room", "m-create-name", "m-create-members", "m-create-error",
    "m-create-cancel", "toast", "m-attach", "m-file", "m-typing", "m-drop",
    "m-lightbox", "m-lightbox-img", "m-lightbox-name", "m-lightbox-open", "m-lightbox-close",
    "m-banned", "m-banned-list", "m-unban", "m-unban-user",
  ];

  function isRoom(key) {
    return !!key && key.charAt(0) === "r";
  }

  function failText(e) {
    return (e && (e.message || e.code)) || "failed";
  }

  // ------------------------------------------------------------ the list
  function renderList() {
    var convs = app.client.conversations;
    var nodes = convs.map(function (c) {
      var li = h("li");
      var b = h("button", "conv m-conv");
      b.type = "button";
      b.dataset.key = c.key;
      b.dataset.kind = c.kind;
      if (c.key === st.active) b.setAttribute("aria-current", "page");
      if (c.muted) b.dataset.muted = "true";
      b.appendChild(dom.avatar(isRoom(c.key) ? "#" : c.with, isRoom(c.key) ? "m-room-avatar" : ""));
      var body = h("span", "m-conv-body");
      var top = h("span", "m-conv-top");
      var time = h("time", "m-conv-time", dom.fmtShort(c.ts));
      if (c.ts) time.dateTime = new Date(c.ts).toISOString();
      top.append(h("span", "conv-name m-conv-title", M.convName(c.key, c)), time);
      var bottom = h("span", "m-conv-bottom");
      if (c.mentions > 0) bottom.appendChild(h("span", "m-mention", "[@you]"));
      var p = M.preview(c, st.user, app.lastMedia(c));
      if (p.draft) bottom.appendChild(h("span", "m-draft", "[draft]"));
      bottom.appendChild(h("span", "m-preview", p.text));
      if (c.muted) {
        var icon = h("span", "m-muted-icon", "🔕");
        icon.setAttribute("role", "img");
        icon.setAttribute("aria-label", "muted");
        bottom.appendChild(icon);
      }
      body.append(top, bottom);
      b.appendChild(body);
      if (c.unread > 0) {
        var badge = h("span", "badge" + (c.muted ? " m-badge-muted" : ""), M.badgeText(c.unread));
        badge.setAttribute("aria-label", c.unread + " unread");
        b.appendChild(badge);
        b.classList.add("has-unread");
      }
      li.appendChild(b);
      return li;
    });
    el.mConvs.replaceChildren.apply(el.mConvs, nodes);
    el.mConvsEmpty.hidden = nodes.length > 0;
    renderHead();
  }

  function renderUnread(total) {
    document.title = M.tabTitle(total);
  }

  // ----------------------------------------------------- the conversation
  function renderHead() {
    var key = st.active;
    var c = key && app.conversation(key);
    el.mTitle.textContent = key ? M.convName(key, c) : "chatd";
    el.mSub.textContent = !key
      ? ""
      : isRoom(key)
        ? (c && c.kind === "private" ? "Private room" : "Room") + (c && c.topic ? " · " + c.topic : "")
        : "Direct message";
    el.mMute.hidden = !c;
    el.mMute.textContent = c && c.muted ? "Unmute" : "Mute";
    el.mMute.dataset.muted = c && c.muted ? "true" : "false";
    el.mInfoBtn.hidden = !isRoom(key);
    el.mInput.disabled = !key;
    el.mSend.disabled = !key;
    el.mAttach.disabled = !key;
    el.mInput.placeholder = key ? "Message " + M.convName(key, c) : "Pick a conversation";
    el.mEmpty.hidden = !!key;
    el.mMain.dataset.kind = key ? (isRoom(key) ? "room" : "dm") : "";
  }

  function scheduleTimeline() {
    if (renderTimer) return;
    renderTimer = setTimeout(function () {
      renderTimer = null;
      renderItems();
    }, 0);
  }

  function dayEl(ts, keep, nodes) {
    var day = new Date(ts).toDateString();
    var k = "d" + day;
    var c = cache.get(k);
    var li = c ? c.li : h("li", "day");
    if (!c) li.appendChild(h("span", null, dom.fmtDay(ts)));
    keep.set(k, { sig: "", li: li });
    nodes.push(li);
    return day;
  }

  function renderItems() {
    var key = st.active;
    var scroller = el.mScroller;
    var wasBottom = stick || dom.atBottom(scroller);
    stick = false;
    if (!key) {
      cache = new Map();
      el.mItems.replaceChildren();
      el.mEarlier.hidden = true;
      el.mStart.hidden = true;
      return;
    }
    var items = app.client.timeline(key);
    var c = app.conversation(key);
    var isDm = !isRoom(key);
    // a long conversation: only the newest window of it is in the page (back to
    // the first window when the reader is at the bottom; while they read further
    // up, new items widen it instead of pushing rows out above them)
    if (wasBottom) windows.delete(key);
    shownFrom = M.windowStart(items.length, windows.get(key) || M.WINDOW);
    if (!wasBottom && shownFirst) {
      var at = items.findIndex(function (it) {
        return itemKey(it) === shownFirst;
      });
      if (at >= 0 && at < shownFrom) {
        shownFrom = at;
        windows.set(key, items.length - at);
      }
    }
    var shown = items.slice(shownFrom);
    shownFirst = shown.length ? itemKey(shown[0]) : null;
    var bySeq = new Map();
    items.forEach(function (it) {
      if (it.seq != null) bySeq.set(it.seq, it);
    });
    var keep = new Map();
    var nodes = [];
    var lastDay = null;
    var before = cache.size;
    shown.forEach(function (it) {
      if (new Date(it.ts).toDateString() !== lastDay) lastDay = dayEl(it.ts, keep, nodes);
      var k = itemKey(it);
      var ctx = {
        recall: app.canRecall(key, it),
        quote: quoteOf(it, bySeq),
        reEdit: it.mine && it.recalled ? st.recalled.get(key + " " + it.seq) || null : null,
      };
      var sig = JSON.stringify([it, ctx, isDm]);
      var old = cache.get(k);
      var li = old && old.sig === sig ? old.li : itemEl(key, it, isDm, ctx);
      keep.set(k, { sig: sig, li: li, it: it });
      nodes.push(li);
    });
    var grew = keep.size > before && before > 0;
    cache = keep;
    el.mItems.replaceChildren.apply(el.mItems, nodes);
    var earlier = shownFrom > 0 || serverHasEarlier(key, c);
    el.mEarlier.hidden = !earlier;
    el.mStart.hidden = earlier || !items.length;
    if (wasBottom) scrollToBottom();
    else if (grew) el.mJump.hidden = false;
    pruneRecall();
    app.markSeen();
  }

  function itemKey(it) {
    return it.seq != null ? "s" + it.seq : "p" + it.id;
  }

  // Whether chatd has items of `key` before the cached ones.
  function serverHasEarlier(key, c) {
    var more = app.client.store.more(key);
    var oldest = app.client.store.oldest(key);
    return more !== false && oldest !== 1 && !!c && c.seq > 0;
  }

  // My messages' Recall buttons go once the recall window has passed (checked
  // every second while one of them is shown).
  function pruneRecall() {
    clearTimeout(recallTimer);
    var key = st.active;
    var ticking = false;
    cache.forEach(function (entry) {
      if (!entry.it || !entry.it.mine || !entry.li.querySelector) return;
      var b = entry.li.querySelector('[data-action="recall"]');
      if (!b) return;
      if (app.canRecall(key, entry.it)) ticking = true;
      else b.remove();
    });
    if (ticking) recallTimer = setTimeout(pruneRecall, 1000);
  }

  // The quote of a reply: the stored one, or the replied message when cached.
  function quoteOf(it, bySeq) {
    if (it.quote) return it.quote;
    if (it.reply_to == null) return null;
    var o = bySeq.get(it.reply_to);
    if (!o || o.event) return { seq: it.reply_to, from: "", name: "", text: "" };
    return { seq: o.seq, from: o.from, name: o.name, text: o.recalled ? "" : String(o.text || "").slice(0, 100) };
  }

  function itemEl(key, it, isDm, ctx) {
    if (it.event) {
      var ev = h("li", "note m-event", M.eventText(it, st.user));
      ev.dataset.seq = String(it.seq);
      ev.dataset.event = it.event;
      return ev;
    }
    var li = h("li", "msg m-msg");
    if (it.seq != null) li.dataset.seq = String(it.seq);
    if (it.id) li.dataset.id = it.id;
    li.dataset.from = it.from;
    li.dataset.status = it.status || "";
    li.classList.toggle("mine", !!it.mine);
    var body = h("div", "msg-body");
    var head = h("div", "msg-head");
    var time = h("time", "msg-time", dom.fmtTime(it.ts));
    time.dateTime = new Date(it.ts).toISOString();
    head.append(h("span", "msg-from", it.mine ? "You" : it.name || it.from), time);
    body.appendChild(head);
    if (ctx.quote) {
      var q = h("div", "m-quote-ref");
      q.dataset.seq = String(ctx.quote.seq);
      q.append(
        h("span", "m-quote-who", (ctx.quote.name || ctx.quote.from || "") + ": "),
        h("span", "m-quote-body", ctx.quote.text ? ctx.quote.text : "[message recalled]")
      );
      body.appendChild(q);
    }
    if (it.recalled) {
      li.classList.add("m-recalled");
      var t = h("div", "m-tombstone", it.mine ? "you recalled a message" : (it.name || it.from) + " recalled a message");
      if (ctx.reEdit) {
        t.append(" ");
        t.appendChild(
          button("link small", "Re-edit", function () {
            el.mInput.value = ctx.reEdit;
            autosize();
            el.mInput.focus();
          })
        );
      }
      body.appendChild(t);
      li.append(dom.avatar(it.from), body);
      return li;
    }
    if (it.upload) {
      // not uploaded yet: its name and size, and how far the upload got
      var pa = it.attachments[0];
      body.appendChild(h("div", "m-att-pending", (pa.name || "file") + (pa.size ? " · " + dom.fmtSize(pa.size) : "")));
      body.appendChild(uploadEl(it));
    } else if (it.attachments && it.attachments.length) body.appendChild(attachmentsEl(it.attachments));
    if (it.text || !(it.attachments && it.attachments.length)) {
      var text = h("div", "msg-text");
      dom.renderText(text, String(it.text || ""));
      body.appendChild(text);
    }
    if (it.edited_ts) body.appendChild(h("span", "m-edited muted small", "(edited)"));
    if (it.reactions && it.reactions.length) {
      var rs = h("div", "m-reacts");
      it.reactions.forEach(function (r) {
        var rb = button("m-react" + (r.me ? " me" : ""), r.emoji + " " + r.count, function () {
          app.react(key, it.seq, r.emoji);
        });
        rb.dataset.emoji = r.emoji;
        rb.setAttribute("aria-pressed", r.me ? "true" : "false");
        rs.appendChild(rb);
      });
      body.appendChild(rs);
    }
    if (it.mine) {
      var tk = h("span", "msg-status m-tick", M.tick(it, isDm));
      if (!isDm && it.readBy > 0) {
        // who read it: chatd names them in rooms of at most --receipt-members
        tk = button("msg-status m-tick link", M.tick(it, isDm), function () {
          showReaders(key, it.seq);
        }, M.tick(it, isDm) + ": show who");
      }
      if (it.status === "failed" && !it.upload) {
        tk.append(": " + (it.error || "error") + " ");
        tk.appendChild(
          button("link small", "Retry", function () {
            retryFailed(it.id);
          })
        );
      }
      body.appendChild(tk);
    }
    if (it.seq != null) body.appendChild(actionsEl(key, it, ctx));
    li.append(dom.avatar(it.from), body);
    return li;
  }

  // ---------------------------------------------------------- attachments
  // Pictures, voice and files of a message. Every URL is one of chatd's
  // /media/ paths from the attachment's own fields (M.attachmentView), never
  // anything from a message's text.
  function attachmentsEl(list) {
    var box = h("div", "m-atts");
    list.forEach(function (a) {
      box.appendChild(attachmentEl(a));
    });
    return box;
  }

  // The attachment with the newest URLs the page has for it.
  function current(a) {
    var f = a && fresh.get(a.media_id);
    return f ? Object.assign({}, a, f) : a;
  }

  // Resolves with the attachment's URLs signed again (GET /api/media/ID).
  function refresh(a) {
    return app.mediaInfo(a.media_id).then(function (info) {
      fresh.set(a.media_id, info);
      return current(a);
    });
  }

  // Resolves with the attachment, its URLs refreshed first when they expired.
  function usable(a) {
    var c = current(a);
    if (typeof c.expires === "number" && c.expires * 1000 <= Date.now() + 5000) return refresh(a);
    return Promise.resolve(c);
  }

  // A picture or player whose URL fails (expired, say) asks for fresh ones once.
  function refreshOnError(node, a, pick) {
    var tried = false;
    node.addEventListener("error", function () {
      if (tried || !a.media_id) {
        node.classList.add("m-att-broken");
        return;
      }
      tried = true;
      refresh(a).then(
        function (c) {
          var v = M.attachmentView(c);
          if (pick(v)) node.src = app.mediaUrl(pick(v));
          var link = node.closest("a");
          if (link && v.href) link.href = app.mediaUrl(v.href);
        },
        function () {
          node.classList.add("m-att-broken");
        }
      );
    });
  }

  function attachmentEl(raw) {
    var a = current(raw);
    var v = M.attachmentView(a);
    if (v.show === "image" && v.src) {
      var link = h("a", "m-att m-att-image");
      link.href = app.mediaUrl(v.href || v.src);
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      link.setAttribute("aria-label", "Picture" + (v.name ? " " + v.name : "") + ": open");
      var img = h("img", "m-thumb");
      img.alt = v.name || "Picture";
      img.decoding = "async";
      var size = M.thumbBox(a.width, a.height, 240);
      if (size) {
        img.width = size.width;
        img.height = size.height;
      }
      refreshOnError(img, raw, function (x) {
        return x.src;
      });
      img.src = app.mediaUrl(v.src);
      link.appendChild(img);
      link.addEventListener("click", function (e) {
        if (e.ctrlKey || e.metaKey || e.shiftKey || e.button) return;
        e.preventDefault();
        openLightbox(raw);
      });
      return link;
    }
    if ((v.show === "audio" || v.show === "video") && v.src) {
      var wrap = h("div", "m-att m-att-" + v.show);
      var player = h(v.show);
      player.controls = true;
      player.preload = "metadata";
      if (v.show === "video") {
        var vs = M.thumbBox(a.width, a.height, 320);
        if (vs) {
          player.width = vs.width;
          player.height = vs.height;
        }
      }
      player.setAttribute("aria-label", (v.show === "audio" ? "Voice message" : "Video") + (v.name ? " " + v.name : ""));
      refreshOnError(player, raw, function (x) {
        return x.src;
      });
      player.src = app.mediaUrl(v.src);
      wrap.appendChild(player);
      return wrap;
    }
    // a file, or anything whose URL is missing: its name and size
    var file = h(v.href ? "a" : "span", "m-att m-att-file");
    var icon = h("span", "m-att-icon", M.fileBadge(v.name));
    icon.setAttribute("aria-hidden", "true");
    file.append(icon, h("span", "m-att-name", v.name || v.label));
    var meta = dom.fmtSize(a.size);
    if (meta) file.appendChild(h("span", "m-att-meta muted small", meta));
    if (v.href) {
      file.href = app.mediaUrl(v.href);
      file.setAttribute("download", v.name || "");
      file.rel = "noopener noreferrer";
      file.addEventListener("click", function (e) {
        var c = current(raw);
        if (!(typeof c.expires === "number" && c.expires * 1000 <= Date.now() + 5000)) return;
        e.preventDefault(); // an expired URL: sign it again, then download
        usable(raw).then(function (u) {
          var href = M.mediaPath(u.url);
          if (href) {
            file.href = app.mediaUrl(href);
            file.click();
          }
        }, function (err) {
          toast("Not available: " + failText(err));
        });
      });
    }
    return file;
  }

  function openLightbox(raw) {
    usable(raw).then(
      function (a) {
        var v = M.attachmentView(a);
        if (!v.href) return;
        var img = el.mLightboxImg;
        img.alt = v.name || "Picture";
        img.src = app.mediaUrl(v.href);
        el.mLightboxName.textContent = v.name || "";
        el.mLightboxOpen.href = app.mediaUrl(v.href);
        if (!el.mLightbox.open) el.mLightbox.showModal();
      },
      function (e) {
        toast("Not available: " + failText(e));
      }
    );
  }

  // ------------------------------------------------------------ uploads
  // Each file picked, dropped or pasted is its own message through the shared
  // client's outbox (sendMedia), the first with the text in the composer as its
  // caption: a pending bubble in the timeline with the upload's progress,
  // retried by the client on network failures, sent once uploaded; a refusal
  // leaves it "not sent" with Retry and Delete.
  function addFiles(files) {
    if (!st.active || !files || !files.length) return;
    var text = !st.editing && el.mInput.value.trim() ? el.mInput.value : "";
    var sent = false;
    Array.from(files).forEach(function (file, i) {
      try {
        app.sendMedia(file, i === 0 ? text : "");
        sent = sent || i === 0;
      } catch (e) {
        el.mError.textContent =
          "Not sent: " + (file.name || "file") + ": " + (e.message === "too_large" ? "the text is too long." : failText(e));
      }
    });
    if (text && sent) clearComposer();
    stick = true;
    scheduleTimeline();
  }

  // After a send: the composer empties (and its mention picker closes).
  function clearComposer() {
    el.mInput.value = "";
    closeMentions();
    autosize();
    renderBars();
  }

  // Retry of my failed message *id* (a send or an upload) from the client's failed list.
  function retryFailed(id) {
    var entry = app.client.failed.find(function (e) {
      return e.id === id;
    });
    if (entry) app.client.retry(entry);
    scheduleTimeline();
  }

  // The upload line of my pending bubble (it.upload from the client's timeline).
  function uploadEl(it) {
    var up = it.upload;
    var name = (it.attachments && it.attachments[0] && it.attachments[0].name) || "file";
    var box = h("div", "m-upload-state");
    var failed = it.status === "failed";
    box.dataset.state = failed ? "failed" : up.state;
    if (failed) {
      box.appendChild(h("span", "m-upload-error form-error small", M.uploadError({ code: up.error || it.error })));
      box.appendChild(
        button("link small m-upload-retry", "Retry", function () {
          retryFailed(it.id);
        }, "Upload " + name + " again")
      );
      box.appendChild(
        button("link small m-upload-remove", "Delete", function () {
          var entry = app.client.failed.find(function (e) {
            return e.id === it.id;
          });
          if (entry) app.client.discard(entry);
          el.mError.textContent = "";
          scheduleTimeline();
        }, "Delete " + name)
      );
      return box;
    }
    var bar = h("progress", "m-upload-progress");
    bar.max = 100;
    bar.value = up.progress || 0;
    bar.setAttribute("aria-label", "Uploading " + name);
    box.append(bar, h("span", "m-upload-label muted small", M.uploadLabel(up)));
    return box;
  }

  // A progress event of my upload `e` ({id, key, state, progress}): only its bar moves.
  function onUpload(e) {
    if (e.key !== st.active || e.state !== "uploading") return;
    var li = el.mItems.querySelector('li.m-msg[data-id="' + CSS.escape(e.id) + '"]');
    var bar = li && li.querySelector("progress.m-upload-progress");
    if (!bar) return;
    bar.value = e.progress;
    li.querySelector(".m-upload-label").textContent = M.uploadLabel(e);
  }

  // A refused upload: why, under the composer (the bubble has Retry / Delete).
  function onUploadFailed(e) {
    if (e.key !== st.active) return;
    el.mError.textContent = "Not uploaded: " + (e.upload.name || "file") + ": " + M.uploadError({ code: e.error });
  }

  // ------------------------------------------------------------- typing
  function renderTyping() {
    clearTimeout(typingTimer);
    var names = isRoom(st.active) ? app.typingIn(st.active) : [];
    var text = dom.typingText(names);
    if (el.mTyping.textContent !== text) el.mTyping.textContent = text;
    el.mTyping.classList.toggle("on", !!text);
    if (names.length) typingTimer = setTimeout(renderTyping, 500);
  }

  function showReaders(key, seq) {
    app.client.receipts(key, seq).then(
      function (r) {
        toast(r.users && r.users.length ? "Read by " + r.users.join(", ") : "Read by " + r.count);
      },
      function (e) {
        toast("Not known: " + failText(e));
      }
    );
  }

  function actionsEl(key, it, ctx) {
    var bar = h("div", "m-actions");
    bar.setAttribute("role", "toolbar");
    bar.setAttribute("aria-label", "Message actions");
    function act(name, text, fn, label) {
      var b = button("m-act", text, fn, label);
      b.dataset.action = name;
      bar.appendChild(b);
      return b;
    }
    act("reply", "Reply", function () {
      setReply({ seq: it.seq, from: it.from, name: it.mine ? "You" : it.name || it.from, text: it.text });
    });
    M.REACTIONS.forEach(function (emoji) {
      act("react", emoji, function () {
        app.react(key, it.seq, emoji);
      }, "React with " + emoji).dataset.emoji = emoji;
    });
    if (M.canEdit(it)) act("edit", "Edit", function () {
      startEdit(it);
    });
    if (ctx.recall) act("recall", "Recall", function () {
      // the window may have passed since the button was drawn
      if (app.canRecall(key, it)) app.recall(key, it);
      else toast(M.opFailedText("too_late"));
      pruneRecall();
    });
    return bar;
  }

  function scrollToBottom() {
    el.mScroller.scrollTop = el.mScroller.scrollHeight;
    el.mJump.hidden = true;
  }

  // Renders the open conversation now, keeping what the reader looks at in place.
  function renderKeepingPlace() {
    var s = el.mScroller;
    var fromBottom = s.scrollHeight - s.scrollTop;
    if (renderTimer) {
      clearTimeout(renderTimer);
      renderTimer = null;
    }
    renderItems();
    s.scrollTop = s.scrollHeight - fromBottom;
  }

  // Earlier items: the cached ones above the window first, then chatd's (not
  // asked while offline when `quiet`: the reader only scrolled to the top).
  function loadEarlier(quiet) {
    var key = st.active;
    if (!key || el.mEarlier.disabled) return;
    var shownCount = app.client.timeline(key).length - shownFrom;
    if (shownFrom > 0) {
      windows.set(key, shownCount + M.WINDOW_STEP);
      renderKeepingPlace();
      return;
    }
    if (!serverHasEarlier(key, app.conversation(key)) || (quiet === true && !app.client.connected)) return;
    el.mEarlier.disabled = true;
    el.mEarlier.textContent = "Loading…";
    var had = app.client.timeline(key).length;
    app.loadEarlier(key).then(
      function () {
        el.mEarlier.disabled = false;
        el.mEarlier.textContent = "Load earlier messages";
        if (st.active !== key) return;
        // the page that came in is shown on top of what was
        windows.set(key, shownCount + Math.max(0, app.client.timeline(key).length - had));
        renderKeepingPlace();
      },
      function (e) {
        el.mEarlier.disabled = false;
        el.mEarlier.textContent = "Load earlier messages";
        toast("Could not load earlier messages: " + failText(e));
      }
    );
  }

  // ------------------------------------------------------------- composer
  function setReply(q) {
    st.reply = q;
    if (q) st.editing = null;
    renderBars();
    el.mInput.focus();
  }

  function startEdit(it) {
    st.editing = { seq: it.seq, text: it.text };
    st.reply = null;
    el.mInput.value = it.text;
    autosize();
    renderBars();
    el.mInput.focus();
    el.mInput.setSelectionRange(el.mInput.value.length, el.mInput.value.length);
  }

  function cancelEdit() {
    st.editing = null;
    el.mInput.value = "";
    autosize();
    renderBars();
  }

  function renderBars() {
    el.mQuote.hidden = !st.reply;
    if (st.reply) {
      el.mQuoteWho.textContent = st.reply.name;
      el.mQuoteText.textContent = String(st.reply.text || "").slice(0, 100);
    }
    el.mEditing.hidden = !st.editing;
    el.mComposer.classList.toggle("editing", !!st.editing);
    el.mSend.textContent = st.editing ? "Save" : "Send";
  }

  function autosize() {
    dom.autosize(el.mInput);
  }

  function submit() {
    var text = el.mInput.value;
    var key = st.active;
    if (!key || !text.trim()) return;
    try {
      app.send(text);
    } catch (e) {
      el.mError.textContent =
        e.message === "too_large" ? "Message is too long." : "Not sent: " + failText(e);
      return;
    }
    el.mError.textContent = "";
    clearComposer();
    stick = true;
    scheduleTimeline();
  }

  // @mention picker (rooms): the members whose id or name starts with what
  // follows the @ before the caret.
  function updateMentions() {
    var key = st.active;
    var ask = ++mentionAsk;
    var q = isRoom(key) ? M.mentionQuery(el.mInput.value, el.mInput.selectionStart) : null;
    if (!q) {
      closeMentions();
      return;
    }
    // one members request per keystroke: an earlier keystroke's answer (or failure)
    // that comes after a later one's must not change (or close) the picker
    app.members(key).then(
      function (list) {
        if (ask !== mentionAsk || st.active !== key) return;
        var again = M.mentionQuery(el.mInput.value, el.mInput.selectionStart);
        if (!again) return;
        var found = M.mentionCandidates(list, again.prefix, st.user, app.role(key));
        mention = found.length ? { start: again.start, prefix: again.prefix, list: found, index: 0 } : null;
        renderMentions();
      },
      function () {
        if (ask === mentionAsk) closeMentions();
      }
    );
  }

  function renderMentions() {
    el.mMentions.hidden = !mention;
    if (!mention) {
      el.mMentions.replaceChildren();
      return;
    }
    el.mMentions.replaceChildren.apply(
      el.mMentions,
      mention.list.map(function (m, i) {
        var li = h("li", "m-mention-opt");
        li.setAttribute("role", "option");
        li.setAttribute("aria-selected", i === mention.index ? "true" : "false");
        li.dataset.user = m.user;
        li.append(h("b", null, m.user === "@all" ? "@all" : "@" + m.user));
        if (m.name && m.name !== m.user) li.append(" ", h("span", "muted", m.name));
        li.addEventListener("mousedown", function (e) {
          e.preventDefault(); // keep the focus in the composer
          pickMention(m);
        });
        return li;
      })
    );
  }

  function pickMention(m) {
    var v = el.mInput.value;
    var caret = el.mInput.selectionStart;
    var tag = (m.user === "@all" ? "@all" : "@" + m.user) + " ";
    el.mInput.value = v.slice(0, mention.start) + tag + v.slice(caret);
    var at = mention.start + tag.length;
    el.mInput.setSelectionRange(at, at);
    closeMentions();
    el.mInput.focus();
  }

  function closeMentions() {
    mention = null;
    renderMentions();
  }

  function onKey(e) {
    if (mention) {
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        var n = mention.list.length;
        mention.index = (mention.index + (e.key === "ArrowDown" ? 1 : n - 1)) % n;
        renderMentions();
        e.preventDefault();
        return;
      }
      if ((e.key === "Enter" && !e.shiftKey) || e.key === "Tab") {
        pickMention(mention.list[mention.index]);
        e.preventDefault();
        return;
      }
      if (e.key === "Escape") {
        closeMentions();
        e.preventDefault();
        return;
      }
    }
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    } else if (e.key === "Escape") {
      if (st.editing) cancelEdit();
      else if (st.reply) setReply(null);
      e.preventDefault();
    } else if (e.key === "ArrowUp" && !el.mInput.value && !st.editing && st.active) {
      var it = M.lastEditable(app.client.timeline(st.active));
      if (it) {
        e.preventDefault();
        startEdit(it);
      }
    }
  }

  // ------------------------------------------------------- opening things
  function saveDraft() {
    var key = st.active;
    if (!key || st.editing) return;
    var c = app.conversation(key);
    var text = el.mInput.value;
    if (c && (text || c.draft)) app.setDraft(key, text);
  }

  function openConv(key) {
    if (st.active !== key) {
      saveDraft();
      cache = new Map();
      shownFirst = null;
      closeMentions();
      el.mError.textContent = "";
      app.open(key);
      var c = app.conversation(key);
      el.mInput.value = c && c.draft ? c.draft : "";
      if (c && c.draft) app.setDraft(key, "");
      autosize();
    } else {
      app.open(key);
    }
    stick = true;
    renderList();
    renderBars();
    renderItems();
    renderTyping();
    if (el.mInfo.hidden === false) renderInfo();
    var conv = app.conversation(key);
    if (!app.client.timeline(key).length && conv && conv.seq > 0 && app.client.connected) loadEarlier();
    document.body.classList.remove("show-sidebar");
    el.mInput.focus();
  }

  function onRemoved(key, kind) {
    if (isRoom(key)) {
      var name = "#" + key.slice(2);
      if (kind === "kicked") toast("You were removed from " + name + ".");
      else if (kind === "banned") toast("You were banned from " + name + ".");
      else toast("You left " + name + ".");
    }
    windows.delete(key);
    if (!st.active) {
      el.mInfo.hidden = true;
      el.mInput.value = "";
      renderBars();
      renderItems();
      renderTyping();
    }
    renderList();
  }

  function openByName(raw) {
    var v = raw.trim();
    if (!v) return;
    if (v.charAt(0) === "#") {
      var room = v.slice(1);
      if (!M.ROOM_RE.test(room)) {
        el.mOpenError.textContent = "Room names are 1–64 letters, digits or _ - . : #";
        return;
      }
      el.mOpenError.textContent = "";
      el.mOpen.value = "";
      if (app.conversation("r:" + room)) {
        openConv("r:" + room);
        return;
      }
      app.joinRoom(room).then(
        function () {
          openConv("r:" + room);
        },
        function (e) {
          el.mOpenError.textContent = "Could not join " + v + ": " + failText(e);
        }
      );
      return;
    }
    var user = v.replace(/^@/, "");
    if (/\s/.test(user) || user.length > 64) {
      el.mOpenError.textContent = "That is not a user id.";
      return;
    }
    if (user === st.user) {
      el.mOpenError.textContent = "That is you.";
      return;
    }
    el.mOpenError.textContent = "";
    el.mOpen.value = "";
    openConv("d:" + user);
  }

  // ------------------------------------------------------------ room info
  function toggleInfo() {
    el.mInfo.hidden = !el.mInfo.hidden;
    el.mInfoBtn.setAttribute("aria-expanded", String(!el.mInfo.hidden));
    if (!el.mInfo.hidden) renderInfo();
  }

  function renderInfo() {
    var key = st.active;
    if (!isRoom(key)) {
      el.mInfo.hidden = true;
      return;
    }
    el.mInfoError.textContent = "";
    fillFacts(key, app.conversation(key));
    app.roomInfo(key).then(
      function (info) {
        if (st.active === key) fillFacts(key, info);
      },
      function () {}
    );
    app.members(key).then(
      function (list) {
        if (st.active === key) renderMembers(key, list);
      },
      function (e) {
        el.mInfoError.textContent = "Members not loaded: " + failText(e);
      }
    );
  }

  function fillFacts(key, info) {
    if (!info) return;
    var mine = info.role || app.role(key);
    var admin = mine === "owner" || mine === "admin";
    el.mInfoName.textContent = info.title || "#" + key.slice(2);
    el.mInfoTopic.textContent = info.topic || "—";
    el.mInfoKind.textContent = info.kind || "";
    el.mInfoRole.textContent = mine || "—";
    el.mEditRoom.hidden = !admin;
    if (admin && document.activeElement !== el.mRoomTitle && document.activeElement !== el.mRoomTopic) {
      el.mRoomTitle.value = info.title || "";
      el.mRoomTopic.value = info.topic || "";
    }
    el.mInvite.hidden = !(admin || info.kind === "public");
    el.mBanned.hidden = !admin;
    if (admin) renderBanned(key);
    var c = app.conversation(key);
    el.mInfoMute.checked = !!(c && c.muted);
  }

  function renderMembers(key, list) {
    var mine = app.role(key);
    el.mInfoCount.textContent = String(list.length);
    el.mLeave.disabled = mine === "owner" && list.length > 1;
    el.mLeave.title = el.mLeave.disabled ? "Make another member the owner first." : "";
    el.mInfoMembers.replaceChildren.apply(
      el.mInfoMembers,
      list.map(function (m) {
        var li = h("li", "member m-member");
        li.dataset.user = m.user;
        li.dataset.role = m.role;
        li.dataset.presence = m.online ? "online" : "unknown";
        var who = m.user === st.user ? h("span", "member-btn") : button("member-btn", null, function () {
          openConv("d:" + m.user);
        }, "Message " + m.user);
        who.append(dom.memberAvatar(m.user), h("span", "member-name", m.name && m.name !== m.user ? m.name + " (" + m.user + ")" : m.user));
        if (m.role !== "member") who.appendChild(h("span", "m-role", m.role));
        li.appendChild(who);
        if (m.user !== st.user && M.outranks(mine, m.role)) {
          var tools = h("span", "m-member-tools");
          tools.appendChild(memberAction(key, "kick", "Kick", m.user, app.kick));
          tools.appendChild(memberAction(key, "ban", "Ban", m.user, app.ban));
          li.appendChild(tools);
        }
        if (m.user !== st.user && mine === "owner") {
          var sel = h("select", "m-role-select");
          sel.setAttribute("aria-label", "Role of " + m.user);
          ["member", "admin", "owner"].forEach(function (r) {
            var o = h("option", null, r);
            o.value = r;
            if (r === m.role) o.selected = true;
            sel.appendChild(o);
          });
          sel.addEventListener("change", function () {
            runInfo(app.setRole(key, m.user, sel.value));
          });
          li.appendChild(sel);
        }
        return li;
      })
    );
  }

  // chatd has no list of a room's banned users: the page lists those its cached
  // timeline shows banned (and not unbanned since); any other is unbanned by id.
  function renderBanned(key) {
    var users = M.bannedIn(app.client.timeline(key));
    el.mBannedList.replaceChildren.apply(
      el.mBannedList,
      users.map(function (u) {
        var li = h("li", "member m-member");
        li.dataset.user = u;
        var who = h("span", "member-btn");
        who.append(dom.avatar(u), h("span", "member-name", u));
        li.appendChild(who);
        var tools = h("span", "m-member-tools");
        tools.appendChild(memberAction(key, "unban", "Unban", u, app.unban));
        li.appendChild(tools);
        return li;
      })
    );
  }

  function memberAction(key, name, text, user, fn) {
    var b = button("link small", text, function () {
      runInfo(fn(key, user));
    }, text + " " + user);
    b.dataset.action = name;
    return b;
  }

  // A room info form naming a user (@ optional): app[action](active room, user);
  // the field is emptied unless it failed.
  function userForm(form, input, action) {
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var user = input.value.trim().replace(/^@/, "");
      if (!user || !st.active) return;
      runInfo(app[action](st.active, user)).then(function () {
        if (!el.mInfoError.textContent) input.value = "";
      });
    });
  }

  // A room command from the info panel: re-render it when done, or say why not.
  function runInfo(p) {
    var key = st.active;
    return p.then(
      function () {
        if (st.active === key && !el.mInfo.hidden) renderInfo();
      },
      function (e) {
        el.mInfoError.textContent = "Refused: " + failText(e);
      }
    );
  }

  // ----------------------------------------------------------- new room
  function openCreate() {
    el.mCreateError.textContent = "";
    el.mCreateForm.reset();
    el.mCreate.showModal();
    el.mCreateRoom.focus();
  }

  function submitCreate(e) {
    e.preventDefault();
    var room = el.mCreateRoom.value.trim().replace(/^#/, "");
    if (!M.ROOM_RE.test(room)) {
      el.mCreateError.textContent = "Room ids are 1–64 letters, digits or _ - . : #";
      return;
    }
    var kind = el.mCreateForm.querySelector('input[name="m-kind"]:checked').value;
    var members = el.mCreateMembers.value
      .split(/[\s,]+/)
      .map(function (u) {
        return u.replace(/^@/, "");
      })
      .filter(function (u) {
        return u && u !== st.user;
      });
    var spec = { room: room, kind: kind };
    if (el.mCreateName.value.trim()) spec.title = el.mCreateName.value.trim();
    if (members.length) spec.members = members;
    el.mCreateError.textContent = "";
    app.createRoom(spec).then(
      function () {
        el.mCreate.close();
        openConv("r:" + room);
      },
      function (err) {
        el.mCreateError.textContent = "Not created: " + failText(err);
      }
    );
  }

  // ----------------------------------------------------------- connection
  function renderConn() {
    var s = st.conn;
    dom.connDot(el.mConnDot, s);
    el.messenger.dataset.conn = s;
    updateBanner();
  }

  function updateBanner() {
    clearTimeout(updateBanner.timer);
    var fatal = st.invalid
      ? "This sign-in link is not valid: open chatd from your app again."
      : st.expired
        ? "Your sign-in has expired: open chatd from your app again."
        : null;
    if (fatal) {
      el.mBanner.hidden = false;
      el.mBannerText.textContent = fatal;
      el.mBannerRetry.hidden = true;
      return;
    }
    if (st.conn === "open" || st.conn === "idle") {
      el.mBanner.hidden = true;
      return;
    }
    el.mBanner.hidden = false;
    if (st.conn === "connecting") {
      el.mBannerText.textContent = "Connecting…";
      el.mBannerRetry.hidden = true;
      return;
    }
    el.mBannerText.textContent =
      (st.refused ? "chatd did not let this sign-in in, or cannot be reached. Retrying" : "Connection lost. Reconnecting") +
      dom.retryIn(st.reconnectAt);
    el.mBannerRetry.hidden = false;
    updateBanner.timer = setTimeout(updateBanner, 1000);
  }

  function renderMe() {
    el.mMeName.textContent = st.name || st.user || "";
    el.mMeAvatar.replaceWith((el.mMeAvatar = dom.avatar(st.user || "?")));
    el.mMeAvatar.id = "m-me-avatar";
  }

  // ---------------------------------------------------------------- bind
  function bind() {
    el.mConvs.addEventListener("click", function (e) {
      var b = e.target.closest("button.m-conv");
      if (b) openConv(b.dataset.key);
    });
    el.mOpenForm.addEventListener("submit", function (e) {
      e.preventDefault();
      openByName(el.mOpen.value);
    });
    el.mNewRoom.addEventListener("click", openCreate);
    el.mCreateForm.addEventListener("submit", submitCreate);
    el.mCreateCancel.addEventListener("click", function () {
      el.mCreate.close();
    });
    el.mComposer.addEventListener("submit", function (e) {
      e.preventDefault();
      submit();
      el.mInput.focus();
    });
    el.mInput.addEventListener("keydown", onKey);
    el.mInput.addEventListener("input", function () {
      autosize();
      el.mError.textContent = "";
      updateMentions();
      if (isRoom(st.active) && el.mInput.value.trim()) app.typing(st.active);
    });
    el.mInput.addEventListener("paste", function (e) {
      var data = e.clipboardData;
      var images = Array.from((data && data.files) || []).filter(function (f) {
        return /^image\//.test(f.type);
      });
      if (!images.length || !st.active) return;
      if (!data.getData("text/plain")) e.preventDefault();
      addFiles(images);
    });
    el.mAttach.addEventListener("click", function () {
      el.mFile.click();
    });
    el.mFile.addEventListener("change", function () {
      addFiles(el.mFile.files);
      el.mFile.value = "";
      el.mInput.focus();
    });
    // files dropped anywhere on the conversation
    function hasFiles(e) {
      return !!st.active && !!e.dataTransfer && Array.from(e.dataTransfer.types || []).indexOf("Files") >= 0;
    }
    el.mMain.addEventListener("dragover", function (e) {
      if (!hasFiles(e)) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = "copy";
      el.mMain.classList.add("m-dropping");
    });
    el.mMain.addEventListener("dragleave", function (e) {
      if (!el.mMain.contains(e.relatedTarget)) el.mMain.classList.remove("m-dropping");
    });
    el.mMain.addEventListener("drop", function (e) {
      el.mMain.classList.remove("m-dropping");
      if (!hasFiles(e)) return;
      e.preventDefault();
      addFiles(e.dataTransfer.files);
    });
    el.mLightboxClose.addEventListener("click", function () {
      el.mLightbox.close();
    });
    el.mLightbox.addEventListener("click", function (e) {
      if (e.target === el.mLightbox) el.mLightbox.close(); // the backdrop
    });
    el.mLightbox.addEventListener("close", function () {
      el.mLightboxImg.removeAttribute("src");
    });
    userForm(el.mUnban, el.mUnbanUser, "unban");
    el.mInput.addEventListener("blur", function () {
      // (later, so a click on an option still picks it; not if the composer has the
      // focus again by then: its picker belongs to what is typed now)
      setTimeout(function () {
        if (document.activeElement !== el.mInput) closeMentions();
      }, 150);
    });
    el.mQuoteCancel.addEventListener("click", function () {
      setReply(null);
    });
    el.mEditCancel.addEventListener("click", cancelEdit);
    el.mEarlier.addEventListener("click", loadEarlier);
    el.mScroller.addEventListener("scroll", function () {
      if (dom.atBottom(el.mScroller)) el.mJump.hidden = true;
      // near the top: the next earlier items come in by themselves
      if (el.mScroller.scrollTop < 64 && !el.mEarlier.hidden) loadEarlier(true);
    });
    el.mJump.addEventListener("click", scrollToBottom);
    el.mMute.addEventListener("click", function () {
      var c = st.active && app.conversation(st.active);
      if (c) app.mute(st.active, !c.muted).catch(function (e) {
        toast("Not changed: " + failText(e));
      });
      renderHead();
      renderList();
    });
    el.mInfoMute.addEventListener("change", function () {
      if (st.active) app.mute(st.active, el.mInfoMute.checked).catch(function (e) {
        toast("Not changed: " + failText(e));
      });
    });
    el.mInfoBtn.addEventListener("click", toggleInfo);
    el.mEditRoom.addEventListener("submit", function (e) {
      e.preventDefault();
      var key = st.active;
      var c = app.conversation(key) || {};
      var changes = {};
      if (el.mRoomTitle.value.trim() !== (c.title || "")) changes.title = el.mRoomTitle.value.trim();
      if (el.mRoomTopic.value.trim() !== (c.topic || "")) changes.topic = el.mRoomTopic.value.trim();
      if (Object.keys(changes).length) runInfo(app.updateRoom(key, changes));
    });
    userForm(el.mInvite, el.mInviteUser, "invite");
    el.mLeave.addEventListener("click", function () {
      var key = st.active;
      if (!isRoom(key)) return;
      app.leave(key).catch(function (e) {
        el.mInfoError.textContent = "Could not leave: " + failText(e);
      });
    });
    el.mBannerRetry.addEventListener("click", function () {
      app.client.reconnectNow();
    });
    el.mLogout.addEventListener("click", function () {
      app.client.close();
      app.client.forget();
      try {
        window.sessionStorage.removeItem("chatd.token");
      } catch (e) {
        /* storage disabled */
      }
      window.location.href = window.location.pathname;
    });
    el.mToggleSide.addEventListener("click", function () {
      var on = document.body.classList.toggle("show-sidebar");
      el.mToggleSide.setAttribute("aria-expanded", String(on));
    });
    window.addEventListener("online", function () {
      app.client.reconnectNow();
    });
    document.addEventListener("visibilitychange", function () {
      if (document.visibilityState !== "visible") return;
      app.markSeen();
      if (st.conn === "waiting") app.client.reconnectNow();
    });
    // leaving the page writes the conversation cache (the next load shows it at
    // once); a page restored from the back-forward cache connects again
    window.addEventListener("pagehide", function () {
      saveDraft();
      app.client.pause();
    });
    window.addEventListener("pageshow", function (e) {
      if (e.persisted) app.client.resume();
    });
  }

  /** Starts the messenger screen for `token` (instead of the sign-in form). */
  function start(token) {
    el = dom.byIds(IDS);
    toast = dom.toaster(el.toast);
    app = window.ChatdWebState.createMessenger(
      {
        conn: renderConn,
        welcomed: renderMe,
        list: renderList,
        unread: renderUnread,
        timeline: scheduleTimeline,
        typing: function (key) {
          if (key === st.active) renderTyping();
        },
        removed: onRemoved,
        roomChanged: function (key) {
          renderHead();
          if (st.active === key && !el.mInfo.hidden) renderInfo();
        },
        toast: function (text) {
          toast(text);
        },
        upload: onUpload,
        uploadFailed: onUploadFailed,
        expired: function () {
          st.expired = true;
          updateBanner();
        },
      },
      {
        token: token,
        visible: function () {
          return document.visibilityState === "visible";
        },
      }
    );
    st = app.state;
    bind();
    document.getElementById("login").hidden = true;
    el.messenger.hidden = false;
    // a cold start shows the cached list at once, then the synced one
    renderMe();
    renderList();
    renderUnread(app.client.totalUnread());
    renderBars();
    renderItems();
    renderConn();
    if (!st.invalid) app.client.connect();
    else {
      st.conn = "idle";
      renderConn();
    }
    // hooks for tests and debugging in the browser console
    window.chatd = {
      state: st,
      messenger: app,
      reconnectNow: function () {
        app.client.reconnectNow();
      },
      disconnect: function (holdMs) {
        app.client.drop(holdMs || 0);
      },
    };
  }

  window.ChatdMessenger = { start: start };
})();
