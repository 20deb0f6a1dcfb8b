"""The one option table (chatd/options.py): every refused value names its option and range.

Unit tests parse options like twistd does (``tap.Options().parseOptions``), for
every numeric row of :data:`chatd.options.TABLE`, on the command line and in a
TOML file. Real ``twistd -n chatd`` subprocesses check the refusals at start
(exit status, one line, no traceback) and on SIGHUP, where the test plays
systemd with a ``NOTIFY_SOCKET`` datagram socket: every reload, failed or not,
ends with ``READY=1`` and a failed one keeps every old value.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import pytest_twisted
from twisted.python import usage

from chatd import options, tap
from chatd.limits import RateLimiter, Strikes
from chatd.reload import Reloader
from chatd.settings import Settings
from tests.support.options import _welcome, parse
from tests.support.process import _wait_log, receive_until, twistd_exit
from tests.wsclient import Client

ROOT = Path(__file__).resolve().parents[2]

NUMERIC = [row for row in options.TABLE if isinstance(row.parse, options.Number)]
#: the other options a value of these needs to be accepted (--workers above 1: --redis)
REQUIRES = {"workers": ("--redis", "redis://localhost")}
FLOATS = [row for row in NUMERIC if row.parse.kind is float]


def _ids(rows):
    return [row.name for row in rows]


def _bad_values(row) -> list[str]:
    """Values *row* must refuse: text, non-finite, huge, over the bound, under the range."""
    number = row.parse
    high = options._number(number.high)
    values = ["x", "", "nan", "inf", "-inf", "1e999", "99999999999999999999999", "-1"]
    values.append(str(int(number.high) + 1) if number.kind is int else f"{high}.5")
    if number.kind is int:
        values += ["1.5", "0x10"]
    if number.zero is None and number.low is None:
        values.append("0")  # positive only
    if number.low is not None and number.low > 0:
        values.append(options._number(number.low / 2) if number.kind is float else "0.5")
    if number.low is not None and number.low < 0:  # a range below 0 (--push-utc-offset)
        values[values.index("-1")] = options._number(number.low - 1)
    return values


CASES = [(row, bad) for row in NUMERIC for bad in _bad_values(row)]


def _expected(row, raw: str) -> str:
    return f"must be {row.parse.describe()}, not {raw!r}"


# the table itself


def test_every_numeric_option_states_a_finite_upper_bound():
    """Each numeric row has a finite upper bound and its description names it."""
    assert len(NUMERIC) >= 20
    for row in NUMERIC:
        assert 0 < row.parse.high < float("inf"), row.name
        assert options._number(row.parse.high) in row.parse.describe(), row.name


def test_settings_come_from_the_table():
    """Every Settings field but close_timeout has exactly one row, whose default is the
    field's default; parsed options build the Settings from the table."""
    rows = {row.setting: row for row in options.TABLE if row.setting}
    fields = {f.name for f in dataclasses.fields(Settings)} - {"close_timeout"}
    assert set(rows) == fields
    for name, row in rows.items():
        assert row.default == getattr(Settings(), name), row.name
    settings = parse("--max-text-length", "77", "--ping-interval", "2.5")["settings"]
    assert settings.max_text_length == 77 and settings.ping_interval == 2.5


def test_twistd_options_are_exactly_the_table():
    """``tap.Options`` knows every row (and only them, plus twistd's --help/--version),
    keeps ``-p`` for ``--port``, and every reload policy names a real applier."""
    parsed = tap.Options()
    assert set(parsed._dispatch) - {"help", "version"} == set(options.BY_NAME)
    assert parsed.synonyms["p"] == "port"
    assert parse("-p", "9001")["listen"] == ["tcp:9001"]
    assert parse()["listen"] == ["tcp:8080"]
    for row in options.TABLE:
        if row.reload is not None:
            assert callable(getattr(Reloader, "_reload_" + row.reload.applier)), row.name
    assert "config" not in options.config_keys()


def test_the_options_table_in_the_docs_is_current():
    """docs/operations.md holds exactly :func:`chatd.options.markdown_table`
    (``python -m chatd.options docs/operations.md`` rewrites it)."""
    text = (ROOT / "docs" / "operations.md").read_text()
    assert options.rewrite_docs(text) == text, "run: python -m chatd.options docs/operations.md"


def test_the_readme_options_table_names_every_option():
    """README.md's option table names every option of the table and no other."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Options") :]
    section = section[: section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    named = set(re.findall(r"`--([a-z][a-z0-9-]*)", "\n".join(rows)))
    assert named == set(options.BY_NAME)


# refusals on the command line and in the file


@pytest.mark.parametrize("row, bad", CASES, ids=[f"{r.name}={b}" for r, b in CASES])
def test_a_bad_number_on_the_command_line_names_the_option_and_range(row, bad):
    """``--NAME BAD`` is refused with ``--NAME: must be <range>, not 'BAD'``."""
    with pytest.raises(usage.UsageError) as error:
        parse(f"--{row.name}", bad)
    assert str(error.value) == f"--{row.name}: {_expected(row, bad)}"


TOML_VALUES = ["nan", "inf", "-inf", "99999999999999999999999", '"x"', "-1", "true"]


@pytest.mark.parametrize("row", NUMERIC, ids=_ids(NUMERIC))
@pytest.mark.parametrize("literal", TOML_VALUES)
def test_a_bad_number_in_the_config_file_names_the_file_key_and_range(tmp_path, row, literal):
    """``NAME = BAD`` in the file is refused naming the file, the key and the range."""
    if literal == "-1" and (row.parse.low or 0) < 0:  # a range below 0 (--push-utc-offset)
        literal = options._number(row.parse.low - 1)
    cfg = tmp_path / "chatd.toml"
    cfg.write_text(f"{row.name} = {literal}\n")
    with pytest.raises(usage.UsageError) as error:
        parse("--config", str(cfg))
    message = str(error.value)
    if literal == "true":
        assert message == f"{cfg}: {row.name}: expected a string or a number, not bool"
        return
    raw = {"nan": "nan", "inf": "inf", "-inf": "-inf", '"x"': "x"}.get(literal, literal)
    assert message == f"{cfg}: {row.name}: {_expected(row, raw)}"


@pytest.mark.parametrize("row", NUMERIC, ids=_ids(NUMERIC))
def test_the_bounds_themselves_are_accepted(tmp_path, row):
    """The upper bound, the lowest value (and 0 where it means off) are accepted,
    from the command line and from the file."""
    number = row.parse
    good = [options._number(number.high)]
    if number.zero is not None:
        good.append("0")
    if number.low is not None:
        good.append(options._number(number.low))
    elif number.kind is int:
        good.append("1")
    else:
        good.append("0.001")
    needs = REQUIRES.get(row.name, ())
    for value in good:
        assert parse(f"--{row.name}", value, *needs)[row.name] == number.kind(value)
        cfg = tmp_path / "ok.toml"
        cfg.write_text(f"{row.name} = {value}\n")
        assert parse("--config", str(cfg), *needs)[row.name] == number.kind(value)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--db-synchronous", "off"], "--db-synchronous: must be FULL or NORMAL, not 'off'"),
        (["--log-format", "xml"], "--log-format: must be text or json, not 'xml'"),
        (["--log-level", "loud"], "--log-level: must be one of debug, info"),
    ],
)
def test_other_parsed_options_name_the_option_too(args, message):
    """Word options refused on the command line say which option."""
    with pytest.raises(usage.UsageError) as error:
        parse(*args)
    assert str(error.value).startswith(message)


def test_a_non_utf8_config_file_is_one_clear_line(tmp_path):
    """A config file that is not UTF-8 is refused in one line naming the file and the byte."""
    cfg = tmp_path / "latin1.toml"
    cfg.write_bytes('webhook-rooms = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(usage.UsageError) as error:
        parse("--config", str(cfg))
    assert str(error.value) == f"{cfg}: not valid UTF-8 (byte 0xe9 at offset 20)"


# 0 means off


def test_zero_strikes_and_zero_bursts_mean_off():
    """``flood_strikes=0`` never reports abuse; a burst of 0 is no bucket (unlimited)."""
    strikes = Strikes(0, 10.0)
    assert not any(strikes.strike(t / 100) for t in range(5000))
    assert strikes.times == ()  # nothing recorded either
    limiter = RateLimiter(5, 0, 5, 0, strikes=0)
    bucket, _ = limiter.connection(0.0)
    assert bucket is None
    limiter.add_user("u", 0.0)
    limiter.add_user("u", 0.0)
    assert all(limiter.check(bucket, Strikes(0, 10.0), "u", 0.0) == "ok" for _ in range(1000))


@pytest_twisted.inlineCallbacks
def test_flood_strikes_zero_refuses_frames_but_never_closes(server_factory):
    """With ``--flood-strikes 0`` a flood over the rate limit gets ``rate_limited`` for
    every frame over the burst but is never closed with 1008 (the old code closed on
    the first refused frame)."""
    srv = yield server_factory("--rate-limit", "0.01", "--rate-burst", "5", "--flood-strikes", "0")
    a = yield Client.v1(srv.port, "flood-off")
    for _ in range(200):
        a.send(type="ping")
    frames = []
    for _ in range(200):
        frames.append((yield a.recv()))
    assert sum(f["type"] == "pong" for f in frames) == 5
    assert sum(f.get("code") == "rate_limited" for f in frames) == 195
    assert a.close_code is None
    yield a.close()


# real twistd: refusals at start


def _twistd(tmp_path, *args) -> subprocess.CompletedProcess:
    return twistd_exit(tmp_path, "-n", "chatd", "--db", ":memory:", *args, timeout=60)


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "option, value",
    [
        ("flood-strikes", "x"),
        ("ping-interval", "nan"),
        ("ping-timeout", "inf"),
        ("max-message-size", "99999999999999999999999"),
    ],
)
def test_twistd_refuses_a_bad_number_at_start(tmp_path, option, value):
    """``twistd -n chatd --OPTION BAD`` exits non-zero with one line naming the
    option and its range, and no traceback."""
    result = _twistd(tmp_path, f"--{option}", value, "--listen", "tcp:0:interface=127.0.0.1")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    row = options.BY_NAME[option]
    assert f"--{option}: {_expected(row, value)}\n" in output, output
    assert "Traceback" not in output and "listening on" not in output


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "content, words",
    [
        (b"ping-interval = nan\n", "ping-interval: must be a positive number up to 86400"),
        (b"max-message-size = 99999999999999999999999\n", "max-message-size: must be"),
        (b'webhook-rooms = "caf\xe9"\n', "not valid UTF-8 (byte 0xe9 at offset 20)"),
    ],
    ids=["nan", "huge", "latin-1"],
)
def test_twistd_refuses_a_bad_config_file_at_start(tmp_path, content, words):
    """A bad value or a non-UTF-8 file stops twistd with one line naming the file."""
    cfg = tmp_path / "chatd.toml"
    cfg.write_bytes(content)
    result = _twistd(tmp_path, "--config", str(cfg), "--listen", "tcp:0:interface=127.0.0.1")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"{cfg}: {words}" in output, output
    assert "Traceback" not in output and "listening on" not in output


# real twistd: refusals on SIGHUP


def _reload(proc, sock) -> str:
    """SIGHUP; the READY=1 datagram that must follow RELOADING=1."""
    proc.proc.send_signal(signal.SIGHUP)
    got = receive_until(sock, "RELOADING=1")
    assert not any("READY=1" in x for x in got), got
    return receive_until(sock, "READY=1")[-1]


@pytest.mark.subprocess
def test_a_bad_file_on_sighup_keeps_old_settings_and_says_ready(tmp_path, twistd_factory):
    """On SIGHUP a file holding nan, inf, a huge integer, or that is not UTF-8 or not
    TOML is logged as a failed reload, changes nothing (max-text-length stays 100) and
    systemd still gets READY=1 after RELOADING=1; a good file afterwards reloads."""
    cfg = tmp_path / "chatd.toml"
    cfg.write_text('db = ":memory:"\nmax-text-length = 100\n')
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        proc = twistd_factory(
            "--config",
            str(cfg),
            "--listen",
            "tcp:0:interface=127.0.0.1",
            env={"NOTIFY_SOCKET": path},
        )
        receive_until(sock, "READY=1")
        assert _welcome(proc.ws_url)["max_text_length"] == 100

        bad_files = [
            (b"max-text-length = 250\nping-interval = nan\n", "ping-interval: must be"),
            (b"max-text-length = 250\nping-timeout = inf\n", "ping-timeout: must be"),
            (b"max-text-length = 250\nmax-message-size = 99999999999999999999999\n", "max-m"),
            (b"max-text-length = 250\nidle-timeout = -inf\n", "idle-timeout: must be"),
            (b'max-text-length = 250\nwebhook-rooms = "caf\xe9"\n', "not valid UTF-8"),
            (b"max-text-length = \n", "not valid TOML"),
        ]
        for n, (content, words) in enumerate(bad_files, 1):
            cfg.write_bytes(content)
            ready = _reload(proc, sock)
            assert f"STATUS=reload failed: {cfg}: {words}" in ready, ready
            line = f"configuration reload failed, nothing changed: {cfg}: {words}"
            assert _wait_log(proc, line), proc.log
            failed = [x for x in proc.log_lines if "configuration reload failed" in x]
            assert len(failed) == n, proc.log
            assert _welcome(proc.ws_url)["max_text_length"] == 100

        cfg.write_text('db = ":memory:"\nmax-text-length = 250\nping-interval = 5\n')
        ready = _reload(proc, sock)
        assert "STATUS=configuration reloaded" in ready
        assert _wait_log(proc, "configuration reloaded: max-text-length, ping-interval")
        assert _welcome(proc.ws_url)["max_text_length"] == 250
        assert "Traceback" not in proc.log
        assert proc.proc.poll() is None
        assert proc.stop() == -signal.SIGTERM


def test_twistd_help_shows_each_range():
    """``--help`` adds each numeric option's range after its help text."""
    text = " ".join(tap.Options().getUsage(width=1000).split())
    for row in NUMERIC:
        assert row.parse.coerceDoc in text, row.name
