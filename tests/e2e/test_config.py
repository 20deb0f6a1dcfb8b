"""``--config chatd.toml``: file values, command-line precedence, refusals, SIGHUP reload."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.python import usage
from websockets.sync.client import connect

from tests.support.options import _welcome, parse
from tests.support.process import _wait_log
from tests.support.rawws import RawWS

ROOT = Path(__file__).resolve().parents[2]


def test_file_values_apply_and_the_command_line_wins(tmp_path):
    """Every key sets its option (dashes or underscores); an option given on the command
    line beats the file; ``listen`` takes a list; ``--port`` replaces the file's listen."""
    cfg = tmp_path / "chatd.toml"
    cfg.write_text(
        'listen = ["tcp:9001:interface=127.0.0.1", "unix:/tmp/x.sock"]\n'
        "max-text-length = 123\n"
        "replay_limit = 7\n"
        'db = "history.sqlite3"\n'
        'log-format = "json"\n'
        'api-key = "k1"\n'
    )
    options = parse("--config", str(cfg), "--replay-limit", "9")
    assert options["listen"] == ["tcp:9001:interface=127.0.0.1", "unix:/tmp/x.sock"]
    assert options["settings"].max_text_length == 123
    assert options["settings"].replay_limit == 9  # command line wins
    assert options["db"] == "history.sqlite3"
    assert options["log-format"] == "json" and options["api-key"] == "k1"
    options = parse("--config", str(cfg), "--port", "8099")
    assert options["listen"] == ["tcp:8099"]


def test_the_example_config_is_valid():
    """chatd.example.toml in the repository parses and sets what it documents."""
    options = parse("--config", str(ROOT / "chatd.example.toml"))
    assert options["listen"] and options["settings"].max_text_length > 0


@pytest.mark.parametrize(
    "content, words",
    [
        ("max-text-lenght = 5\n", ["unknown key 'max-text-lenght'"]),
        ("max-text-length = 0\n", ["max-text-length", "positive"]),
        ('max-text-length = "many"\n', ["max-text-length"]),
        ("replay-limit = true\n", ["replay-limit", "expected a string or a number"]),
        ('log-format = "xml"\n', ["log-format", "text or json"]),
        ("listen = [1.5, {a = 1}]\n", ["listen"]),
        ("max-text-length = \n", ["not valid TOML"]),
    ],
)
def test_unknown_keys_and_bad_values_are_refused_naming_the_key(tmp_path, content, words):
    """A typo or a bad value stops start-up with a message naming the file and the key."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    with pytest.raises(usage.UsageError) as error:
        parse("--config", str(cfg))
    message = str(error.value)
    assert str(cfg) in message
    for word in words:
        assert word in message, message


def test_missing_file_is_refused(tmp_path):
    """A config path that does not exist is a usage error saying so."""
    with pytest.raises(usage.UsageError, match="cannot read config file"):
        parse("--config", str(tmp_path / "nope.toml"))


def test_twistd_refuses_a_bad_config_at_start(tmp_path):
    """``twistd -n chatd --config bad.toml`` exits non-zero and names the key."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text("ping-intervall = 3\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "chatd",
            "--config",
            str(cfg),
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "unknown key 'ping-intervall'" in result.stdout + result.stderr


@pytest.mark.subprocess
def test_sighup_reloads_live_settings_and_says_what(tmp_path, twistd_factory):
    """SIGHUP re-reads the file: new limits apply to new connections at once, the log
    names what was reloaded and what needs a restart; a broken file changes nothing."""
    cfg = tmp_path / "chatd.toml"
    cfg.write_text('max-text-length = 100\ndb = ":memory:"\n')
    proc = twistd_factory("--config", str(cfg), "--listen", "tcp:0:interface=127.0.0.1")
    assert _welcome(proc.ws_url)["max_text_length"] == 100

    cfg.write_text('max-text-length = 250\nlog-level = "debug"\ndb = "other.sqlite3"\n')
    proc.proc.send_signal(signal.SIGHUP)
    assert _wait_log(proc, "configuration reloaded: "), proc.log
    assert _wait_log(proc, "needs a restart to take effect: db"), proc.log
    line = next(x for x in proc.log_lines if "configuration reloaded:" in x)
    assert "max-text-length" in line and "log-level" in line
    assert _welcome(proc.ws_url)["max_text_length"] == 250

    cfg.write_text("max-text-length = -1\n")
    proc.proc.send_signal(signal.SIGHUP)
    assert _wait_log(proc, "configuration reload failed, nothing changed"), proc.log
    assert _welcome(proc.ws_url)["max_text_length"] == 250
    assert proc.proc.poll() is None
    assert proc.stop() == -signal.SIGTERM


@pytest.mark.subprocess
def test_sighup_reloads_limits_and_origins_for_open_connections_too(tmp_path, twistd_factory):
    """Limits and allowed origins reload live: an open connection gets the new room
    limit, new handshakes meet the new origin list, and the log names the keys."""
    from websockets.exceptions import InvalidStatus

    cfg = tmp_path / "chatd.toml"
    cfg.write_text('db = ":memory:"\nmax-rooms = 2\nallowed-origin = ["https://a.example"]\n')
    proc = twistd_factory("--config", str(cfg), "--listen", "tcp:0:interface=127.0.0.1")
    url = proc.ws_url + "/ws"
    with connect(url, subprotocols=["chatd.v1"], origin="https://a.example") as ws:
        assert json.loads(ws.recv(timeout=10))["max_rooms"] == 2
        for room in ("r1", "r2", "r3"):
            ws.send(json.dumps({"type": "join", "room": room, "id": room}))
        replies = [json.loads(ws.recv(timeout=10)) for _ in range(3)]
        # (the refusal is immediate; joined waits for the store, so it may come first)
        assert sorted(r.get("room") or r["code"] for r in replies) == ["r1", "r2", "too_many_rooms"]

        cfg.write_text('db = ":memory:"\nmax-rooms = 3\nallowed-origin = ["https://b.example"]\n')
        proc.proc.send_signal(signal.SIGHUP)
        assert _wait_log(proc, "configuration reloaded: "), proc.log
        line = next(x for x in proc.log_lines if "configuration reloaded:" in x)
        assert "max-rooms" in line and "allowed-origin" in line
        ws.send(json.dumps({"type": "join", "room": "r3", "id": "again"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "joined"  # the open connection
    with pytest.raises(InvalidStatus) as refused:
        connect(url, subprotocols=["chatd.v1"], origin="https://a.example", open_timeout=10)
    assert refused.value.response.status_code == 403
    with connect(url, subprotocols=["chatd.v1"], origin="https://b.example") as ws:
        assert json.loads(ws.recv(timeout=10))["max_rooms"] == 3


@pytest.mark.subprocess
def test_sighup_rereads_the_word_list(tmp_path, twistd_factory):
    """--word-list is read at start and re-read on every SIGHUP, even when the
    configuration file did not change; a word added to the file is masked from then
    on, and an unreadable file at start stops chatd."""
    words = tmp_path / "words.txt"
    words.write_text("傻瓜\n", encoding="utf-8")
    cfg = tmp_path / "chatd.toml"
    cfg.write_text(f'db = ":memory:"\nword-list = "{words}"\n')
    proc = twistd_factory("--config", str(cfg), "--listen", "tcp:0:interface=127.0.0.1")
    assert _wait_log(proc, "word list"), proc.log
    ws = RawWS.v1(proc.port)
    ws.send_json(type="join", room="r")
    ws.expect("joined", room="r")

    def sent(text, mid):
        ws.send_json(type="send", room="r", text=text, id=mid)
        ws.expect("ack", id=mid)
        ws.send_json(type="history", room="r", limit=1)
        return ws.expect("history")["messages"][-1]["text"]

    assert sent("傻瓜 and 笨蛋", "m1") == "** and 笨蛋"
    words.write_text("傻瓜\n笨蛋\n", encoding="utf-8")
    proc.proc.send_signal(signal.SIGHUP)
    assert _wait_log(proc, "2 words"), proc.log
    assert sent("傻瓜 and 笨蛋", "m2") == "** and **"
    ws.close()
    assert proc.stop() == -signal.SIGTERM
    words.unlink()
    result = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "chatd",
         "--word-list", str(words), "--db", ":memory:"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert result.returncode != 0 and "--word-list" in result.stdout + result.stderr
