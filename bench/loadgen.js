// The fan-out load generator used by bench/fanout.py (run on its own core).
//
// It speaks just enough WebSocket over raw `net` sockets to be cheap: the
// client handshake, masked text frames from publishers (all-zero mask key, so
// no XOR work) and a receive path that only walks frame headers.
// Subscribers never send after the handshake (chatd.v1: after `join`).
//
//   node bench/loadgen.js '<json config>'      -> prints one JSON line
//
// Config keys (see DEFAULTS): mode = throughput | latency | connections | acks;
// protocol = relay | chatd.v1; S subscribers, P publishers, C idle
// connections; window = messages in flight per publisher (throughput);
// rate = messages/s over all publishers (latency); payload = text bytes;
// serverPid = pid whose CPU and RSS are read from /proc; deflate = offer
// permessage-deflate on every connection (the server must accept it); fill =
// 'x' (pad with x) or 'text' (pad with random words: compresses like chat text).
//
// With deflate, a frame with RSV1 set is inflated (zlib raw inflate, the
// trailing 00 00 ff ff appended) wherever its text is read: joins, publishers,
// latency samples, and every frame subscriber 0 counts (its check that each
// counted frame carries a benchmark text); other subscribers count the frame
// without inflating it, as they count uncompressed frames without reading them.
// `wire_bytes_per_delivery` is the mean size of the frames counted as deliveries.
//
// mode = acks (durable sends, bench/messenger_bench.py): N chatd.v1 sender
// connections, each with the token of line i of `tokensFile` (a JSON array;
// `?token=` in the URL), join room `<roomPrefix><i mod rooms>` and send
// `send {room, text, id}`; an `ack` (sent by chatd after the commit) ends a
// send. rate = 0: closed loop, `window` sends in flight per connection;
// rate > 0: open loop, `rate` sends/s over all connections (a connection with
// `maxInflight` unacked skips its turn, counted in `skipped`). Ack latency =
// ack received - send written, for the sends written during the measurement.
// request = read: the same, but each request is `read {room, seq}` with seq
// seqFrom + 1, + 2, + 3, ... per connection (the marker moves forward every time
// while the room has that many items and seqFrom is at or past where the
// member's marker starts), ended by the `read` frame chatd sends the user
// (in request order per connection: the oldest outstanding one ends).
// features = '' or a chatd `?features=` value (e.g. 'receipts_batch') for every
// connection; `receipt_frames_per_s` counts the `receipt`/`receipts_batch`
// frames all connections received. seqTo = the room's last seq (0: unknown): reads
// sent during the measurement past it moved no marker and are counted in
// `reads_past_end` (the room was too short for the run).
//
// Every published text starts with `~B~<send time ms>~<publisher>~<n>~` and is
// padded with `x` to `payload` bytes; a delivery is one received frame that
// carries such a text, on any connection other than the sender.
'use strict';
const net = require('net');
const fs = require('fs');
const crypto = require('crypto');
const zlib = require('zlib');

const DEFAULTS = {
  host: '127.0.0.1', port: 0, path: '/', protocol: 'relay', mode: 'throughput',
  S: 1000, P: 4, C: 10000, duration: 10, warmup: 2, window: 16, rate: 50,
  payload: 80, serverPid: 0, connectConcurrency: 64, settleMs: 500,
  drainMs: 3000, setupTimeout: 120, deflate: false, fill: 'x',
  N: 100, rooms: 50, roomPrefix: 'b', tokensFile: '', maxInflight: 1000, request: 'send',
  features: '', seqFrom: 0, seqTo: 0,
};
const cfg = Object.assign({}, DEFAULTS, JSON.parse(process.argv[2] || '{}'));
const MARK = Buffer.from('~B~');
const room = 'bench';
const now = () => performance.now();
const READBUF = Buffer.alloc(256 * 1024);
const SYNC_TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);
// random words, for fill = 'text' (a fixed seed: the same text every run)
const WORDS = ('the of and to in is you that it he was for on are as with his they at be ' +
  'this have from or one had by word but not what all were we when your can said there ' +
  'use an each which she do how their if will up other about out many then them these so ' +
  'some her would make like him into time has look two more write go see number no way ' +
  'could people my than first water been call who oil its now find long down day did get ' +
  'come made may part meeting tonight station ticket lunch message phone later thanks').split(' ');
const FILLER = (() => {
  let x = 12345, out = '';
  while (out.length < 1 << 16) { x = (x * 1103515245 + 12345) & 0x7fffffff; out += WORDS[x % WORDS.length] + ' '; }
  return out;
})();
let fillAt = 0;
function inflate(buf, s, e) {
  return zlib.inflateRawSync(Buffer.concat([buf.subarray(s, e), SYNC_TAIL]),
    { finishFlush: zlib.constants.Z_SYNC_FLUSH });
}

const st = {
  phase: 'connect', // connect -> settle -> run -> drain -> done
  recording: false,
  sent: 0, rx: 0, other: 0, lastFrameAt: 0, rxBytes: 0, rxCompressed: 0,
  validated: 0, invalid: 0, lat: [],
  publishing: false,
};
const fanout = cfg.S + cfg.P - 1;
const TOKENS = cfg.tokensFile ? JSON.parse(fs.readFileSync(cfg.tokensFile, 'utf8')) : [];
Object.assign(st, { acked: 0, duplicates: 0, errors: 0, firstError: null, skipped: 0, recordFrom: Infinity, receipts: 0, pastEnd: 0 });
const ACK = Buffer.from(cfg.request === 'read' ? '{"type":"read"' : '{"type":"ack"');
const ID = Buffer.from('"id":"');

function readRssKb(pid) {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch (e) { return null; }
}
function readCpuTicks(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]); // utime + stime (fields 14, 15)
  } catch (e) { return null; }
}
const CLK_TCK = 100;
// Busy ticks of each CPU from /proc/stat (total minus idle and iowait).
function readCoreBusy() {
  try {
    const out = {};
    for (const line of fs.readFileSync('/proc/stat', 'utf8').split('\n')) {
      const m = /^cpu(\d+)\s+(.*)$/.exec(line);
      if (!m) continue;
      const v = m[2].trim().split(/\s+/).map(Number);
      const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
      out[m[1]] = total - v[3] - v[4];
    }
    return out;
  } catch (e) { return null; }
}

function maskedFrame(text) {
  const payload = Buffer.from(text);
  const n = payload.length;
  let head;
  if (n < 126) head = Buffer.from([0x81, 0x80 | n, 0, 0, 0, 0]);
  else { head = Buffer.from([0x81, 0xfe, n >> 8, n & 0xff, 0, 0, 0, 0]); }
  return Buffer.concat([head, payload]);
}

function benchText(pub, n) {
  const t = `~B~${now().toFixed(3)}~${pub}~${n}~`;
  if (t.length >= cfg.payload) return t;
  const need = cfg.payload - t.length;
  if (cfg.fill !== 'text') return t + 'x'.repeat(need);
  if (fillAt + need > FILLER.length) fillAt = 0;
  const pad = FILLER.slice(fillAt, fillAt + need);
  fillAt += need;
  return t + pad;
}

function recordLatency(buf, s, e) {
  const k = buf.indexOf(MARK, s);
  if (k < 0 || k >= e) return;
  let j = k + 3;
  const t0 = j;
  while (j < e && buf[j] !== 0x7e) j++;
  const ts = Number(buf.toString('latin1', t0, j));
  st.lat.push(now() - ts);
}

class Conn {
  constructor(idx, role) {
    this.idx = idx; this.role = role; // 'sub' | 'pub' | 'idle'
    this.rest = null; this.open = false; this.joined = false; this.n = 0;
    this.sock = null;
    this.room = role === 'sender' ? `${cfg.roomPrefix}${idx % cfg.rooms}` : room;
    this.token = TOKENS.length ? TOKENS[idx % TOKENS.length] : null;
    this.sentAt = new Map(); // acks mode: n -> send time
  }

  start(done) {
    const key = crypto.randomBytes(16).toString('base64');
    this.expectAccept = crypto.createHash('sha1')
      .update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
    // `onread` hands each read straight to us in one shared buffer: no stream
    // machinery and no Buffer allocation per read (the receive path's cost).
    const sock = net.connect({
      host: cfg.host, port: cfg.port,
      onread: { buffer: READBUF, callback: (nread, buf) => { this.onRead(buf.subarray(0, nread)); } },
    });
    this.sock = sock;
    sock.setNoDelay(true);
    this.done = done;
    let head = Buffer.alloc(0);
    sock.on('connect', () => {
      let proto = cfg.protocol === 'chatd.v1' ? 'Sec-WebSocket-Protocol: chatd.v1\r\n' : '';
      if (cfg.deflate) proto += 'Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n';
      const query = [];
      if (this.token) query.push(`token=${encodeURIComponent(this.token)}`);
      if (cfg.features) query.push(`features=${encodeURIComponent(cfg.features)}`);
      const path = query.length ? `${cfg.path}?${query.join('&')}` : cfg.path;
      sock.write(`GET ${path} HTTP/1.1\r\nHost: ${cfg.host}:${cfg.port}\r\n` +
        'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${proto}\r\n`);
    });
    this.onRead = (chunk) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      const text = head.toString('latin1', 0, end);
      if (!/^HTTP\/1\.1 101/.test(text) || text.indexOf(this.expectAccept) < 0) {
        fail(`handshake refused on connection ${this.idx}: ${text.split('\r\n')[0]}`);
        return;
      }
      if (cfg.deflate && !/^sec-websocket-extensions: permessage-deflate/im.test(text)) {
        fail(`permessage-deflate not accepted on connection ${this.idx}`);
        return;
      }
      this.onRead = (c) => this.onData(c);
      this.open = true;
      if (cfg.protocol === 'chatd.v1' && this.role !== 'idle') {
        sock.write(maskedFrame(JSON.stringify({ type: 'join', room: this.room })));
      } else {
        this.finishSetup();
      }
      const rest = head.subarray(end + 4);
      if (rest.length) this.onData(rest);
    };
    sock.on('error', (e) => { if (st.phase !== 'done') fail(`socket error on ${this.idx}: ${e.message}`); });
    sock.on('close', () => {
      if (st.phase !== 'done' && st.phase !== 'closing') fail(`server closed connection ${this.idx}`);
    });
  }

  finishSetup() {
    if (this.done) { const d = this.done; this.done = null; d(); }
  }

  onData(chunk) {
    let buf = chunk;
    if (this.rest) { buf = Buffer.concat([this.rest, chunk]); this.rest = null; }
    const n = buf.length;
    let i = 0;
    while (n - i >= 2) {
      const b0 = buf[i];
      let len = buf[i + 1] & 0x7f;
      let h = i + 2;
      if (len === 126) { if (n - i < 4) break; len = buf.readUInt16BE(h); h += 2; }
      else if (len === 127) { if (n - i < 10) break; len = Number(buf.readBigUInt64BE(h)); h += 8; }
      if (h + len > n) break;
      const op = b0 & 0x0f;
      if (op === 1 || op === 2) this.frame(buf, h, h + len, (b0 & 0x40) !== 0);
      else if (op === 9) this.pong(buf.subarray(h, h + len));
      i = h + len;
    }
    if (i < n) this.rest = Buffer.from(buf.subarray(i)); // copy: READBUF is reused
    st.lastFrameAt = now();
    if (st.publishing && cfg.mode === 'throughput') pump();
  }

  frame(buf, s, e, compressed) {
    if (this.role === 'sender') {
      if (compressed) { buf = inflate(buf, s, e); s = 0; e = buf.length; }
      this.senderFrame(buf, s, e);
      return;
    }
    const wire = e - s + (e - s < 126 ? 2 : e - s < 65536 ? 4 : 10);
    if (this.role === 'sub' && st.phase !== 'connect' && st.phase !== 'settle') {
      st.rx++;
      st.rxBytes += wire;
      if (compressed) {
        st.rxCompressed++;
        if (this.idx !== 0 && !(st.recording && cfg.mode === 'latency')) return;
        buf = inflate(buf, s, e); s = 0; e = buf.length;
      }
      if (this.idx === 0) { // one subscriber checks every frame it counts
        if (buf.indexOf(MARK, s) >= 0 && buf.indexOf(MARK, s) < e) st.validated++; else st.invalid++;
      }
      if (st.recording && cfg.mode === 'latency') recordLatency(buf, s, e);
      return;
    }
    if (compressed) { buf = inflate(buf, s, e); s = 0; e = buf.length; }
    const k = buf.indexOf(MARK, s);
    if (k >= 0 && k < e) {
      if (st.phase !== 'connect' && st.phase !== 'settle') {
        st.rx++;
        st.rxBytes += wire;
        if (compressed) st.rxCompressed++;
        if (st.recording && cfg.mode === 'latency') recordLatency(buf, s, e);
      }
      return;
    }
    if (!this.joined && cfg.protocol === 'chatd.v1') {
      const txt = buf.toString('utf8', s, e);
      if (txt.indexOf('"type":"joined"') >= 0) { this.joined = true; this.finishSetup(); return; }
      if (txt.indexOf('"error"') >= 0) fail(`chatd error during join: ${txt}`);
    }
    st.other++;
  }

  // acks mode: an ack ends a send; a bench text is a delivery of another
  // member's message; anything else before `joined` is setup.
  senderFrame(buf, s, e) {
    if (buf.indexOf(ACK, s) === s) {
      let n;
      if (cfg.request === 'read') {
        n = this.sentAt.keys().next().value; // answered in request order
      } else {
        const k = buf.indexOf(ID, s) + ID.length;
        const dash = buf.indexOf(0x2d, k); // a<idx>-<n>
        const q = buf.indexOf(0x22, dash);
        n = Number(buf.toString('latin1', dash + 1, q));
      }
      const t = this.sentAt.get(n);
      if (t === undefined) { st.other++; return; }
      this.sentAt.delete(n);
      st.acked++;
      if (buf.indexOf('"duplicate":true', s) >= 0 && buf.indexOf('"duplicate":true', s) < e) st.duplicates++;
      if (st.recording && t >= st.recordFrom) st.lat.push(now() - t);
      if (st.publishing && cfg.rate === 0) this.fill();
      return;
    }
    const k = buf.indexOf(MARK, s);
    if (k >= 0 && k < e) {
      if (st.phase === 'run') st.rx++;
      return;
    }
    const txt = buf.toString('utf8', s, e);
    if (!this.joined) {
      if (txt.indexOf('"type":"joined"') >= 0) { this.joined = true; this.finishSetup(); return; }
      if (txt.indexOf('"type":"error"') >= 0) fail(`chatd error during join: ${txt}`);
    } else if (txt.indexOf('"type":"error"') >= 0) {
      st.errors++;
      if (!st.firstError) st.firstError = txt.slice(0, 300);
      return;
    } else if (txt.startsWith('{"type":"receipt')) {
      st.receipts++; // (receipt and receipts_batch)
    }
    st.other++;
  }

  sendDurable() {
    const n = this.n++;
    this.sentAt.set(n, now());
    // a read past the room's last seq (seqTo, when known) moves no marker: counted
    if (cfg.request === 'read' && cfg.seqTo && cfg.seqFrom + n + 1 > cfg.seqTo) st.pastEnd++;
    const req = cfg.request === 'read'
      ? { type: 'read', room: this.room, seq: cfg.seqFrom + n + 1 }
      : { type: 'send', room: this.room, text: benchText(this.idx, n), id: `a${this.idx}-${n}` };
    this.sock.write(maskedFrame(JSON.stringify(req)));
    st.sent++;
  }

  fill() { // closed loop: keep `window` sends in flight
    while (this.sentAt.size < cfg.window) this.sendDurable();
  }

  pong(payload) {
    const n = payload.length;
    this.sock.write(Buffer.concat([Buffer.from([0x8a, 0x80 | n, 0, 0, 0, 0]), payload]));
  }

  publish() {
    const n = this.n++;
    const text = benchText(this.idx, n);
    const msg = cfg.protocol === 'chatd.v1'
      ? JSON.stringify({ type: 'send', room, text, id: `b${this.idx}-${n}` })
      : text;
    this.sock.write(maskedFrame(msg));
    st.sent++;
  }
}

let finished = false;
function emit(obj) {
  if (finished) return;
  finished = true;
  st.phase = 'done';
  process.stdout.write(JSON.stringify(obj) + '\n', () => process.exit(obj.error ? 2 : 0));
}
function fail(msg) { emit({ error: msg, mode: cfg.mode, phase: st.phase }); }

function openAll(conns) {
  return new Promise((resolve) => {
    let next = 0, pending = 0, ready = 0;
    const kick = () => {
      while (pending < cfg.connectConcurrency && next < conns.length) {
        const c = conns[next++];
        pending++;
        c.start(() => { pending--; ready++; if (ready === conns.length) resolve(); else kick(); });
      }
    };
    kick();
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function quiet(ms, maxMs) { // wait until no frame arrived for `ms`
  const t0 = now();
  st.lastFrameAt = now();
  while (now() - st.lastFrameAt < ms && now() - t0 < maxMs) await sleep(50);
}

let pubs = [];
let rr = 0;
function pump() {
  const limit = cfg.P * cfg.window * fanout;
  while (st.publishing && st.sent * fanout - st.rx < limit) {
    pubs[rr].publish();
    rr = (rr + 1) % pubs.length;
  }
}

function pct(sorted, q) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}
const r3 = (x) => (x === null || x === undefined ? null : Math.round(x * 1000) / 1000);

async function runConnections() {
  const before = readRssKb(cfg.serverPid);
  const t0 = now();
  const conns = [];
  for (let i = 0; i < cfg.C; i++) conns.push(new Conn(i, 'idle'));
  await openAll(conns);
  const setupS = (now() - t0) / 1000;
  await sleep(1000);
  const after = readRssKb(cfg.serverPid);
  st.phase = 'closing';
  emit({
    mode: 'connections', protocol: cfg.protocol, C: cfg.C, setup_s: r3(setupS),
    rss_before_kb: before, rss_after_kb: after,
    kb_per_conn: before !== null && after !== null ? r3((after - before) / cfg.C) : null,
  });
}

async function runAcks() {
  const t0 = now();
  const conns = [];
  for (let i = 0; i < cfg.N; i++) conns.push(new Conn(i, 'sender'));
  await openAll(conns);
  const setupS = (now() - t0) / 1000;
  st.phase = 'settle';
  await quiet(cfg.settleMs, 30000); // presence and join events
  st.phase = 'run';
  st.publishing = true;
  let ticker = null;
  if (cfg.rate === 0) {
    for (const c of conns) c.fill();
  } else {
    const tStart = now();
    let next = 0;
    ticker = setInterval(() => {
      const due = Math.floor(((now() - tStart) * cfg.rate) / 1000) - st.sent - st.skipped;
      for (let k = 0; k < due; k++) {
        const c = conns[next]; next = (next + 1) % conns.length;
        if (c.sentAt.size >= cfg.maxInflight) st.skipped++; else c.sendDurable();
      }
    }, 1);
  }
  await sleep(cfg.warmup * 1000);
  st.recording = true;
  st.recordFrom = now();
  const snap = () => ({ t: now(), acked: st.acked, sent: st.sent, rx: st.rx, skipped: st.skipped, receipts: st.receipts, pastEnd: st.pastEnd,
    srv: readCpuTicks(cfg.serverPid), cores: readCoreBusy() });
  const cpu0 = process.cpuUsage();
  const m0 = snap();
  await sleep(cfg.duration * 1000);
  const m1 = snap();
  const gen = process.cpuUsage(cpu0);
  st.recording = false;
  st.publishing = false;
  if (ticker) clearInterval(ticker);
  st.phase = 'drain';
  const tStop = now();
  let last = -1, lastChange = now();
  while (st.acked < st.sent && now() - lastChange < cfg.drainMs) {
    await sleep(20);
    if (st.acked !== last) { last = st.acked; lastChange = now(); }
  }
  const wallS = (m1.t - m0.t) / 1000;
  const lat = Float64Array.from(st.lat).sort();
  const acks = (m1.acked - m0.acked) / wallS;
  const out = {
    mode: 'acks', request: cfg.request, N: cfg.N, rooms: cfg.rooms, members_per_room: Math.ceil(cfg.N / cfg.rooms),
    window: cfg.rate === 0 ? cfg.window : null, rate: cfg.rate || null, payload: cfg.payload,
    duration: r3(wallS), setup_s: r3(setupS),
    acks_per_s: Math.round(acks),
    sent_per_s: Math.round((m1.sent - m0.sent) / wallS),
    deliveries_per_s: Math.round((m1.rx - m0.rx) / wallS),
    receipt_frames_per_s: Math.round((m1.receipts - m0.receipts) / wallS),
    reads_past_end: m1.pastEnd - m0.pastEnd,
    sent: st.sent, acked: st.acked, unacked: st.sent - st.acked, skipped: st.skipped,
    duplicates: st.duplicates, errors: st.errors, first_error: st.firstError,
    drain_ms: Math.round(now() - tStop),
    ack_p50_ms: r3(pct(lat, 0.5)), ack_p90_ms: r3(pct(lat, 0.9)), ack_p99_ms: r3(pct(lat, 0.99)),
    ack_max_ms: lat.length ? r3(lat[lat.length - 1]) : null, samples: lat.length,
    gen_cpu: r3((gen.user + gen.system) / 1e6 / wallS),
    server_cpu: m0.srv !== null && m1.srv !== null ? r3((m1.srv - m0.srv) / CLK_TCK / wallS) : null,
  };
  if (cfg.rate) {
    // Kept up: acked what was offered (3 % slack), nothing skipped, all acked after the stop.
    out.offered_per_s = cfg.rate;
    out.keeps_up = acks >= 0.97 * cfg.rate && out.skipped === 0 && out.unacked === 0;
  }
  if (m0.cores && m1.cores) {
    out.core_busy = {};
    for (const k of Object.keys(m1.cores)) out.core_busy[k] = r3((m1.cores[k] - m0.cores[k]) / CLK_TCK / wallS);
  }
  st.phase = 'closing';
  emit(out);
}

async function runFanout() {
  const t0 = now();
  const subs = [];
  for (let i = 0; i < cfg.S; i++) subs.push(new Conn(i, 'sub'));
  pubs = [];
  for (let i = 0; i < cfg.P; i++) pubs.push(new Conn(cfg.S + i, 'pub'));
  await openAll(subs.concat(pubs));
  const setupS = (now() - t0) / 1000;
  st.phase = 'settle';
  await quiet(cfg.settleMs, 30000); // chatd.v1: presence frames of the joins
  st.phase = 'run';
  st.rx = 0; st.sent = 0; st.validated = 0; st.invalid = 0; st.rxBytes = 0; st.rxCompressed = 0;
  st.publishing = true;
  let ticker = null;
  if (cfg.mode === 'throughput') {
    pump();
    ticker = setInterval(pump, 20);
  } else {
    const tStart = now();
    ticker = setInterval(() => {
      const due = Math.floor(((now() - tStart) * cfg.rate) / 1000) - st.sent;
      for (let k = 0; k < due; k++) { pubs[rr].publish(); rr = (rr + 1) % pubs.length; }
    }, 2);
  }
  await sleep(cfg.warmup * 1000);
  st.recording = true;
  const m0 = { t: now(), rx: st.rx, sent: st.sent, cpu: process.cpuUsage(), srv: readCpuTicks(cfg.serverPid), cores: readCoreBusy(),
    backlog: st.sent * fanout - st.rx };
  await sleep(cfg.duration * 1000);
  const m1 = { t: now(), rx: st.rx, sent: st.sent, cpu: process.cpuUsage(m0.cpu), srv: readCpuTicks(cfg.serverPid), cores: readCoreBusy(),
    backlog: st.sent * fanout - st.rx };
  st.recording = false;
  st.publishing = false;
  clearInterval(ticker);
  st.phase = 'drain';
  const expected = st.sent * fanout;
  const tStop = now();
  let lastRx = -1, lastChange = now();
  while (st.rx < expected && now() - lastChange < cfg.drainMs) {
    await sleep(20);
    if (st.rx !== lastRx) { lastRx = st.rx; lastChange = now(); }
  }
  const drainMs = now() - tStop;
  const wallS = (m1.t - m0.t) / 1000;
  const lat = Float64Array.from(st.lat).sort();
  const deliveries = (m1.rx - m0.rx) / wallS;
  const offered = cfg.mode === 'latency' ? cfg.rate * fanout : null;
  const out = {
    mode: cfg.mode, protocol: cfg.protocol, S: cfg.S, P: cfg.P, payload: cfg.payload,
    window: cfg.mode === 'throughput' ? cfg.window : null,
    rate: cfg.mode === 'latency' ? cfg.rate : null,
    duration: r3(wallS), setup_s: r3(setupS),
    deliveries_per_s: Math.round(deliveries),
    messages_per_s: Math.round((m1.sent - m0.sent) / wallS),
    offered_per_s: offered,
    sent: st.sent, expected, received: st.rx, loss: Math.max(0, expected - st.rx),
    extra: Math.max(0, st.rx - expected),
    drain_ms: Math.round(drainMs),
    backlog_growth: m1.backlog - m0.backlog,
    p50_ms: r3(pct(lat, 0.5)), p90_ms: r3(pct(lat, 0.9)), p99_ms: r3(pct(lat, 0.99)),
    max_ms: lat.length ? r3(lat[lat.length - 1]) : null, samples: lat.length,
    gen_cpu: r3((m1.cpu.user + m1.cpu.system) / 1e6 / wallS),
    server_cpu: m0.srv !== null && m1.srv !== null ? r3((m1.srv - m0.srv) / CLK_TCK / wallS) : null,
    validated: st.validated, invalid: st.invalid,
    deflate: !!cfg.deflate, fill: cfg.fill,
    wire_bytes_per_delivery: st.rx ? r3(st.rxBytes / st.rx) : null,
    compressed_share: st.rx ? r3(st.rxCompressed / st.rx) : null,
  };
  // How busy each core was during the measurement, all processes together:
  // core0 - server_cpu (or core1 - gen_cpu) is time other processes took.
  if (m0.cores && m1.cores) {
    out.core_busy = {};
    for (const k of Object.keys(m1.cores)) out.core_busy[k] = r3((m1.cores[k] - m0.cores[k]) / CLK_TCK / wallS);
  }
  if (cfg.mode === 'latency') {
    // Kept up: delivered what was offered, nothing lost, drained within 1 s, and
    // the deliveries owed did not grow by more than 50 ms worth of traffic.
    out.keeps_up = deliveries >= 0.97 * offered && out.loss === 0 && drainMs < 1000 &&
      out.backlog_growth <= 0.05 * offered;
  }
  st.phase = 'closing';
  emit(out);
}

setTimeout(() => fail(`setup/run timed out in phase ${st.phase}`),
  (cfg.setupTimeout + cfg.duration + cfg.warmup + cfg.drainMs / 1000 + 30) * 1000).unref();
const RUN = { connections: runConnections, acks: runAcks };
(RUN[cfg.mode] || runFanout)().catch((e) => fail(String(e.stack || e)));
