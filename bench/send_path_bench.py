"""CPU per durable send of the chat's own send path, in one thread: a figure that a
busy machine barely moves (issue 14).

The sends bench (``messenger_bench.py sends``) measures the whole server, and on a
shared 2-core box its acked/s and even its CPU per send move with what else runs.
This one drives :meth:`chatd.chat.Chat.receive` directly with ``send`` frames of
``--users`` token users (two per room, rate limits off), on the unit tests' realm
(tests/support/realm.py: the MemoryStore, which answers at once, and recording
fakes for connections and fan-out; time from a ``task.Clock``): parse, checks,
Inbox.post, the message log, the store append, the fan-out of the ``message`` to the
room's other member and the ``ack``. No sockets, no SQLite, no writer thread, no
reactor: what it leaves out is what the sends bench adds. ``thread_time`` of
``--sends`` sends, best of ``--rounds``; one JSON line::

    PYTHONPATH=. taskset -c 0 python3 bench/send_path_bench.py
    {"bench": "send_path", "users": 100, "sends": 20000, "rounds": 5, "us_per_send": ...}

Compare two trees by running each tree's copy in the same minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.task import Clock  # noqa: E402

from tests.support.realm import make_chat, say, token_user  # noqa: E402

TEXT = "x" * 80


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=100, help="token users, two per room")
    p.add_argument("--sends", type=int, default=20000, help="sends per round")
    p.add_argument("--rounds", type=int, default=5, help="rounds after a warm-up one")
    args = p.parse_args(argv)
    clock = Clock()
    clock.advance(1_700_000_000)
    chat = make_chat(clock, rate_limit=0, user_rate_limit=0)
    users = [token_user(chat, f"u{i}") for i in range(args.users)]
    rooms = max(1, args.users // 2)
    for i, conn in enumerate(users):
        say(chat, conn, type="join", room=f"r{i % rooms}")
    frames = [
        f'{{"type":"send","room":"r{i % rooms}","text":"{TEXT}","id":"m%d"}}'.encode()
        for i in range(args.users)
    ]
    sent = 0

    def round_() -> float:
        nonlocal sent
        started = time.thread_time()
        for k in range(sent, sent + args.sends):
            i = k % args.users
            chat.receive(users[i].session, frames[i] % k, False)
        took = time.thread_time() - started
        sent += args.sends
        acks = sum(f.startswith(b'{"type":"ack"') for conn in users for f in conn.frames)
        if acks != args.sends:
            raise SystemExit(f"{acks} acks for {args.sends} sends")
        for conn in users:
            conn.frames.clear()
        return took

    round_()  # warm-up
    best = min(round_() for _ in range(args.rounds))
    print(
        json.dumps(
            {
                "bench": "send_path",
                "users": args.users,
                "sends": args.sends,
                "rounds": args.rounds,
                "us_per_send": round(best / args.sends * 1e6, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
