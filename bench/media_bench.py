"""Media benchmark: processing cost per image, and upload throughput through a real chatd.

Two measurements, one JSON line each:

* ``process``: :func:`chatd.media.process.inspect` (decode, EXIF-free re-encode,
  320 px WebP thumbnail, SHA-256) in this process on one thread, for a JPEG of
  about ``--kb`` KB: milliseconds per image (median and p90), images per
  CPU-second; and the thumbnail alone (from the decoded image):
  ``thumb_ms_p50`` / ``thumb_ms_p90``;
* ``upload``: a ``twistd -n chatd`` child with ``--jwt-secret`` and a fresh
  ``--media-dir``; ``--uploads`` ``POST /api/media`` of distinct such JPEGs from
  ``--clients`` concurrent loopback clients: uploads per second, MB/s of
  request bodies, and the server's CPU seconds per upload (``/proc/<pid>/stat`` of chatd and its media workers,
  utime+stime over the run), i.e. uploads per core-second.

* ``chat_latency``: the chat latency of ``klat50`` (bench/kstamp.py: kernel
  receive timestamps, 50 messages/s over ``--subscribers`` chatd.v1 connections)
  on a chatd pinned to core 0, the generator and the uploaders (this process)
  on core 1 (``taskset`` / ``sched_setaffinity``, when there are two cores): once idle, once while
  ``--uploaders`` clients each upload ``--upload-mb`` MB images back to back.
  ``p99_ms`` of each and their ratio; ``max_ms`` is the longest any chat message
  waited. ``reactor_idle`` / ``reactor_uploading``: the longest reactor turn
  measured inside chatd (bench/reactor_probe.py: how late a 5 ms timer fires)
  over each klat50 run, its connection set-up included, and how many timer
  calls were more than 5 ms late. Image work runs in the media pool, never on
  the reactor; with the server pinned to one core the pool's threads still
  compete with the reactor for that core (and, in Python code, for the GIL).

    python3 bench/media_bench.py                 # 200 KB images, 60 uploads, 2 clients
    python3 bench/media_bench.py --quick         # a few seconds
    python3 bench/media_bench.py --skip-latency  # without the chat_latency runs

The machine is shared (2 cores, other engineers' tests running): the figures
are bounded by the box and vary from run to run; CPU seconds per upload is the
scaling figure.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reactor_probe  # noqa: E402
from chatd_process import start_chatd as start  # noqa: E402  (bench/)
from cluster_bench import cpu_seconds  # noqa: E402
from fanout import pinned  # noqa: E402

KSTAMP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kstamp.py")

SECRET = "media-bench-secret-32-bytes-long!!!!"


def tree_cpu(pid: int) -> float:
    """CPU seconds of *pid* and its live descendants (chatd's media worker processes)."""
    total = cpu_seconds(pid)
    kids = []
    try:  # every thread's children: the media pool thread starts the forkserver
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    for kid in kids:
        try:
            total += tree_cpu(kid)
        except OSError:  # it ended meanwhile
            pass
    return total


def _photo(side: int, quality: int = 85) -> bytes:
    from PIL import Image, ImageFilter

    im = Image.effect_noise((side, side * 3 // 4), 60).convert("RGB")
    im = im.filter(ImageFilter.GaussianBlur(1))
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality)
    return out.getvalue()


#: the largest side of a bench photo: 4000 x 3000, a 12 Mpx phone picture
MAX_SIDE = 4000


def photos_of_about(kb: int, count: int) -> list[bytes]:
    """*count* distinct photo-like JPEGs (blurred noise) of at least about *kb* KB:
    quality 85 up to :data:`MAX_SIDE`, then quality 95 (a 12 Mpx photo of ~5 MB)."""
    for quality in (85, 95):
        side = 300
        while len(_photo(side, quality)) < kb * 1024 and side < MAX_SIDE:
            side = min(MAX_SIDE, int(side * 1.05) + 1)
        if len(_photo(side, quality)) >= kb * 1024 * 0.9:
            break
    return [_photo(side, quality) for _ in range(count)]


def bench_process(images: list[bytes]) -> dict:
    from chatd.media.process import Limits, inspect

    limits = Limits(50 << 20, 50 << 20, 50 << 20)
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        start_cpu = time.process_time()
        for data in images:
            src = os.path.join(tmp, "in")
            with open(src, "wb") as f:
                f.write(data)
            t0 = time.perf_counter()
            done = inspect(src, tmp, limits)
            times.append((time.perf_counter() - t0) * 1000)
            for p in done.paths():
                if p != src:
                    os.unlink(p)
        cpu = time.process_time() - start_cpu
        thumbs = []
        from PIL import Image, ImageOps

        from chatd.media.process import _thumbnail

        for data in images:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                t0 = time.perf_counter()
                os.unlink(_thumbnail(im, tmp, ImageOps))
                thumbs.append((time.perf_counter() - t0) * 1000)
    times.sort()
    thumbs.sort()
    return {
        "bench": "process",
        "images": len(images),
        "image_kb": round(statistics.mean(len(d) for d in images) / 1024, 1),
        "ms_p50": round(times[len(times) // 2], 2),
        "ms_p90": round(times[int(len(times) * 0.9)], 2),
        "images_per_cpu_s": round(len(images) / cpu, 1),
        "thumb_ms_p50": round(thumbs[len(thumbs) // 2], 2),
        "thumb_ms_p90": round(thumbs[int(len(thumbs) * 0.9)], 2),
    }


#: twistd with bench/reactor_probe.py imported first (it measures the reactor's turns)
PROBED = [
    sys.executable,
    "-c",
    f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
    "import reactor_probe; from twisted.scripts.twistd import run; sys.exit(run())",
]


def start_chatd(media_dir: str, pin=None, *extra, probe=None):
    args = ["--db", ":memory:", "--jwt-secret", SECRET, "--media-dir", media_dir, *extra]
    if probe is None:
        return start([*args, "--media-quota-bytes", "0"], cwd=media_dir, pin=pin)
    env = {"CHATD_REACTOR_PROBE": probe}
    args.append("--media-quota-bytes")
    return start([*args, "0"], cwd=media_dir, pin=pin, env=env, twistd=PROBED)


def _token() -> str:
    import jwt

    return jwt.encode({"sub": "bench", "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")


def upload_once(conn, token: str, data: bytes) -> int:
    """``POST /api/media`` of the JPEG *data* on *conn*: the status."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="p.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    conn.request(
        "POST",
        "/api/media",
        body,
        {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Authorization": f"Bearer {token}",
        },
    )
    resp = conn.getresponse()
    resp.read()
    return resp.status


def bench_upload(images: list[bytes], clients: int) -> dict:
    token = _token()
    with tempfile.TemporaryDirectory() as media_dir:
        proc, port = start_chatd(media_dir)
        try:
            queue = list(enumerate(images))
            lock = threading.Lock()
            failures = []

            def worker():
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                while True:
                    with lock:
                        if not queue:
                            break
                        _, data = queue.pop()
                    status = upload_once(conn, token, data)
                    if status != 201:
                        failures.append(status)
                conn.close()

            cpu0, t0 = tree_cpu(proc.pid), time.perf_counter()
            threads = [threading.Thread(target=worker) for _ in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall, cpu = time.perf_counter() - t0, tree_cpu(proc.pid) - cpu0
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    total = sum(len(d) for d in images)
    return {
        "bench": "upload",
        "uploads": len(images),
        "clients": clients,
        "failures": len(failures),
        "image_kb": round(total / len(images) / 1024, 1),
        "uploads_per_s": round(len(images) / wall, 1),
        "mb_per_s": round(total / wall / 1e6, 2),
        "server_cpu_ms_per_upload": round(cpu / len(images) * 1000, 2),
        "uploads_per_core_s": round(len(images) / cpu, 1) if cpu else None,
    }


def _klat50(port: int, pid: int, subscribers: int, duration: float) -> dict:
    cfg = {
        "mode": "latency",
        "S": subscribers,
        # 10 messages/s per publisher: under chatd's 20/s per connection (--rate-limit)
        "P": 5,
        "payload": 80,
        "fill": "x",
        "rate": 50,
        "duration": duration,
        "warmup": 2.0,
        "port": port,
        "protocol": "chatd.v1",
        "serverPid": pid,
        "path": "/",
    }
    gen = subprocess.run(
        pinned(1, [sys.executable, KSTAMP, json.dumps(cfg)]),
        capture_output=True,
        text=True,
        timeout=120 + duration,
    )
    lines = [ln for ln in gen.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"error": gen.stderr[-600:]}
    return json.loads(lines[-1])


def _pin_self(core: int):
    """Pin this process to *core* (when there are two cores): its previous affinity."""
    if (os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setaffinity"):
        return None
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    return before


def _profiled(pid: int, out: str | None):
    """``py-spy record`` of *pid* into *out* (raw, for flame graphs), or None."""
    if not out:
        return None
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    cmd = [spy, "record", "-p", str(pid), "-f", "raw", "-r", "200", "-o", out, "--threads"]
    cmd += os.environ.get("MEDIA_BENCH_PYSPY", "--nonblocking").split()  # e.g. "--idle"
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _behind_the_generator() -> None:
    """In an uploader thread: ``SCHED_IDLE`` for this thread (Linux: per thread), so
    the chat load generator sharing core 1 is never kept waiting by it.

    The uploaders stand for other people's phones. Here they share core 1 with the
    klat50 generator, and on loopback a sender's ``send()`` also runs the receiving
    side's TCP processing (softirq) in its own time slice: 20 threads pushing 5 MB
    bodies delayed the generator's publishes, and the generator writes the send
    time into each message *before* sending it, so that delay counted as chat
    latency although chatd never saw the message yet."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


def bench_chat_latency(
    uploaders: int,
    mb: float,
    subscribers: int,
    duration: float,
    profile=None,
    uploader_policy: str = "idle",
) -> dict:
    """klat50 idle and while *uploaders* clients upload *mb* MB images (see the docstring);
    with *profile*, chatd is sampled by py-spy while uploading (raw stacks into it)."""
    images = photos_of_about(int(mb * 1024), uploaders)
    token = _token()
    limit = str(max(len(d) for d in images) + (1 << 20))
    with tempfile.TemporaryDirectory() as media_dir:
        probe = os.path.join(media_dir, "reactor-probe.jsonl")
        proc, port = start_chatd(media_dir, 0, "--max-image-bytes", limit, probe=probe)
        pinned_here = _pin_self(1)  # the uploaders' threads: off the server's core
        try:
            t_idle = time.time()
            idle = _klat50(port, proc.pid, subscribers, duration)
            idle_turns = reactor_probe.read(probe, t_idle, time.time())
            stop = threading.Event()
            done, failures = [], []

            def uploader(data):
                if uploader_policy == "idle":
                    _behind_the_generator()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                while not stop.is_set():
                    status = upload_once(conn, token, data)
                    (done if status == 201 else failures).append(status)
                conn.close()

            threads = [threading.Thread(target=uploader, args=(d,)) for d in images]
            cpu0, t0 = tree_cpu(proc.pid), time.perf_counter()
            for t in threads:
                t.start()
            t_busy = time.time()
            spy = _profiled(proc.pid, profile)
            busy = _klat50(port, proc.pid, subscribers, duration)
            busy_turns = reactor_probe.read(probe, t_busy, time.time())
            if spy is not None:
                spy.send_signal(2)  # SIGINT: py-spy writes its file and ends
                spy.wait(timeout=30)
            stop.set()
            for t in threads:
                t.join()
            wall, cpu = time.perf_counter() - t0, tree_cpu(proc.pid) - cpu0
        finally:
            if pinned_here is not None:
                os.sched_setaffinity(0, pinned_here)
            proc.terminate()
            proc.wait(timeout=15)
    keep = ("p50_ms", "p99_ms", "max_ms", "loss", "keeps_up", "error")
    out = {
        "bench": "chat_latency",
        "subscribers": subscribers,
        "uploaders": uploaders,
        "image_mb": round(statistics.mean(len(d) for d in images) / 1e6, 2),
        "pinned": bool(shutil.which("taskset")) and (os.cpu_count() or 1) >= 2,
        "uploader_policy": uploader_policy,
        "idle": {k: idle[k] for k in keep if k in idle},
        "uploading": {k: busy[k] for k in keep if k in busy},
        "uploads_done": len(done),
        "upload_failures": len(failures),
        "uploads_per_s": round(len(done) / wall, 2),
        "server_cpu_s": round(cpu, 2),
    }
    if idle.get("p99_ms") and busy.get("p99_ms"):
        out["p99_ratio"] = round(busy["p99_ms"] / idle["p99_ms"], 2)
    out["longest_chat_wait_ms"] = busy.get("max_ms")
    out["reactor_idle"] = idle_turns
    out["reactor_uploading"] = busy_turns
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kb", type=int, default=200, help="image size in KB (about)")
    parser.add_argument("--images", type=int, default=40, help="images for the process bench")
    parser.add_argument("--uploads", type=int, default=60)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--uploaders", type=int, default=20)
    parser.add_argument("--upload-mb", type=float, default=5.0)
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0, help="klat50 seconds per run")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--only-latency", action="store_true", help="just the chat_latency runs")
    parser.add_argument(
        "--profile", help="py-spy raw stacks of chatd while uploading, into this file"
    )
    parser.add_argument(
        "--uploader-policy",
        choices=("idle", "normal"),
        default="idle",
        help="the uploader threads' scheduling: idle (SCHED_IDLE, behind the chat load "
        "generator on their shared core; the default since 2026-12-04) or normal",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.uploads = 5, 6
        args.uploaders, args.upload_mb, args.duration = 2, 1.0, 3.0
    # distinct pictures (noise differs each time): every upload stores new objects
    if not args.only_latency:
        images = photos_of_about(args.kb, max(args.images, args.uploads))
        print(json.dumps(bench_process(images[: args.images])), flush=True)
        print(json.dumps(bench_upload(images[: args.uploads], args.clients)), flush=True)
    if not args.skip_latency:
        result = bench_chat_latency(
            args.uploaders,
            args.upload_mb,
            args.subscribers,
            args.duration,
            args.profile,
            args.uploader_policy,
        )
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
