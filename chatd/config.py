"""The configuration file: ``twistd chatd --config chatd.toml``.

The file is TOML (read with the standard library's :mod:`tomllib`). Each key
is the name of a command-line option of ``twistd chatd`` (``max-text-length``
or ``max_text_length``; the keys are the rows of :data:`chatd.options.TABLE`
but ``config``), and each value goes through exactly the same parsing
and checks as that option on the command line, so the two can never disagree.
A repeatable option (``listen``) takes a list. A flag takes ``true``/``false``.

Precedence: an option given on the command line wins over the file; the file
wins over the built-in default. ``port`` and ``listen`` count as one: either
on the command line replaces both from the file.

An unknown key, a bad value, a file that is not UTF-8 or not TOML stops
start-up with one line naming the file (and the key), e.g.
``chatd.toml: max-text-length: must be a positive integer up to 1000000, not '0'``;
on a SIGHUP reload the same refusal keeps the old settings.

``chatd.example.toml`` in the repository documents every key.

How it hooks into :class:`chatd.tap.Options`: :func:`track` (called from
``Options.__init__``) wraps every option handler so the options really given
on the command line, and their raw values, are known; :func:`apply` (called
first thing in ``postOptions``) loads the file and feeds every key the command
line did not set through the option's own handler. :func:`reparse` builds a
fresh ``Options`` from the same command line and the file as it is now: the
SIGHUP reload uses it.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from twisted.python import usage

from chatd import options as options_table

#: options that together say where chatd listens
LISTEN_GROUP = frozenset({"port", "listen"})


def track(options: usage.Options) -> None:
    """Record every option the command line gives *options*, in order.

    After parsing, ``options.given`` is the set of long option names given on
    the command line and ``options.given_args`` the ``(name, raw value)``
    pairs, so :func:`reparse` can replay them.
    """
    options.given = set()
    options.given_args = []
    for name, handler in list(options._dispatch.items()):
        if isinstance(handler, usage.CoerceParameter):
            original = handler.dispatch

            def dispatch(param, value, _original=original):
                _record(options, param, value)
                return _original(param, value)

            handler.dispatch = dispatch
        else:

            def call(param, value=None, _handler=handler):
                _record(options, param, value)
                return _handler(param, value)

            options._dispatch[name] = call


def _record(options, param, value) -> None:
    if getattr(options, "_from_file", False):
        return
    options.given.add(param)
    options.given_args.append((param, value))


def config_keys(options: usage.Options | None = None) -> list[str]:
    """Every key a configuration file may hold (the long option names of the table)."""
    return options_table.config_keys()


def load(path) -> dict:
    """Read the TOML file at *path*; a missing or malformed file is a :class:`usage.UsageError`."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise usage.UsageError(f"cannot read config file {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise usage.UsageError(
            f"{path}: not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise usage.UsageError(f"{path}: not valid TOML: {e}") from e


def _scalar(path, key, value) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise usage.UsageError(
            f"{path}: {key}: expected a string or a number, not {type(value).__name__}"
        )
    return str(value)


def apply(options: usage.Options) -> None:
    """Load ``options['config']`` (if set) into *options*, under the command line.

    Raises :class:`usage.UsageError` naming the key for an unknown key or a
    bad value.
    """
    path = options.get("config")
    if not path:
        return
    data = load(path)
    given = getattr(options, "given", set())
    known = set(config_keys(options))
    skip = set(given)
    if given & LISTEN_GROUP:
        skip |= LISTEN_GROUP
    options._from_file = True
    try:
        _apply(options, path, data, known, skip)
    finally:
        options._from_file = False
    options["config"] = str(Path(path))


def _apply(options, path, data, known, skip) -> None:
    for raw_key, value in data.items():
        key = raw_key.replace("_", "-")
        if key not in known:
            raise usage.UsageError(
                f"{path}: unknown key {raw_key!r} (known keys: {', '.join(sorted(known))})"
            )
        if key in skip:
            continue
        kind = options_table.BY_NAME[key].kind
        handler = options._dispatch[key]
        try:
            if kind == "flag":
                if not isinstance(value, bool):
                    raise usage.UsageError(f"{path}: {key}: expected true or false")
                if value:
                    handler(key, None)
            elif kind == "param":
                handler.dispatch(key, _scalar(path, key, value))
            else:  # a repeatable option: a list or one value
                values = value if isinstance(value, list) else [value]
                for item in values:
                    handler(key, _scalar(path, key, item))
        except options_table.OptionError as e:
            raise usage.UsageError(f"{path}: {key}: {e.reason}") from None
        except usage.UsageError as e:
            message = str(e)
            if message.startswith(f"{path}:"):
                raise
            raise usage.UsageError(f"{path}: {key}: {message}") from e
        except (ValueError, TypeError) as e:
            raise usage.UsageError(f"{path}: {key}: {e}") from e


def reparse(options: usage.Options) -> usage.Options:
    """A fresh Options of the same class: the same command line, the file as it is now.

    Raises :class:`usage.UsageError` when the file has become invalid.
    """
    fresh = type(options)()
    for name, value in getattr(options, "given_args", []):
        handler = fresh._dispatch[name]
        if isinstance(handler, usage.CoerceParameter):
            handler.dispatch(name, value)
        else:
            handler(name, value)
    fresh.postOptions()
    return fresh


def post_options(options) -> None:
    """Load the config file under the command line; fill ``api-key`` from the environment."""
    apply(options)
    if not options.get("api-key"):
        options["api-key"] = os.environ.get("CHATD_API_KEY") or None
