"""SIGHUP: re-read ``--config`` and apply what can change live.

What a reload does with each changed option is the option's ``reload`` in
:data:`chatd.options.TABLE`: the ``_reload_<applier>`` method of :class:`Reloader`
it names. systemd hears ``RELOADING=1`` before and ``READY=1`` after every reload,
failed or not (``systemctl reload`` waits for it).
"""

from __future__ import annotations

import os
import signal

from twisted.logger import Logger
from twisted.python import usage

from chatd import config
from chatd import options as options_table


class Reloader:
    """Applies a re-read configuration to the running parts it is given.

    *options* are the parsed ``twistd chatd`` options (updated with every value
    applied); *factory* the :class:`chatd.factory.ChatFactory` (settings, gate,
    protocol options, the chat's limits), *logs* the
    :class:`chatd.logs.LogSettings`, *api_key* the :class:`chatd.api.ApiKey`,
    *webhooks* the :class:`chatd.webhooks.Webhooks` and *notifier* the
    :class:`chatd.notify.Notifier`.
    """

    log = Logger()

    def __init__(self, options, factory, logs, api_key, webhooks, notifier, reactor):
        self.options = options
        self.factory = factory
        self.logs = logs
        self.api_key = api_key
        self.webhooks = webhooks
        self.notifier = notifier
        self.reactor = reactor
        self._previous_sighup = None

    def listen(self) -> None:
        """Reload on SIGHUP from now on."""
        self._previous_sighup = signal.signal(signal.SIGHUP, self._on_sighup)
        self.log.info("chatd reloads {config} on SIGHUP", config=self.options.get("config"))

    def stop_listening(self) -> None:
        """Give SIGHUP back the handler :meth:`listen` replaced."""
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None

    def _on_sighup(self, signum, frame):
        self.reactor.callFromThread(self.reload)

    def reload(self):
        """Re-read the config file and apply what can change live; log what changed.

        Returns ``(applied, needs_restart)``: lists of option names. A file that
        cannot be read or holds a bad value is logged and changes nothing.
        Whatever happens, systemd hears ``READY=1`` after ``RELOADING=1``
        (``systemctl reload`` waits for it).
        """
        self.notifier.reloading()
        status = "reload failed"
        try:
            try:
                fresh = config.reparse(self.options)
            except usage.UsageError as e:
                status = f"reload failed: {e}"
                self.log.error(
                    "configuration reload failed, nothing changed: {error}", error=str(e)
                )
                return [], []
            except Exception as e:
                status = f"reload failed: {e!r}"
                self.log.failure("configuration reload failed, nothing changed")
                return [], []
            applied, restart = self._apply_changes(fresh)
            if "word-list" not in applied and fresh.get("word-list"):
                self._reload_word_list(fresh, [])  # the file is re-read on every SIGHUP
            status = "configuration reloaded"
            return applied, restart
        finally:
            self.notifier.reloaded(" ".join(status.split()))

    def _apply_changes(self, fresh):
        """Apply every changed option of *fresh* its table row lets change live."""
        changed = [
            row
            for row in options_table.TABLE
            if row.in_file and self.options.get(row.name) != fresh.get(row.name)
        ]
        live = sorted((row for row in changed if row.reload), key=lambda row: row.name)
        restart = sorted(row.name for row in changed if not row.reload)
        appliers = []
        for row in live:
            if row.reload.applier not in appliers:
                appliers.append(row.reload.applier)
        applied = []
        for applier in appliers:
            rows = [row for row in live if row.reload.applier == applier]
            try:
                getattr(self, "_reload_" + applier)(fresh, rows)
            except Exception:
                self.log.failure(
                    "configuration reload failed to apply {keys}",
                    keys=", ".join(row.name for row in rows),
                )
                continue
            for row in rows:
                self.options[row.name] = fresh[row.name]
                applied.append(row.name)
        applied.sort()
        if applied:
            self.log.info("configuration reloaded: {keys}", keys=", ".join(applied))
        else:
            self.log.info("configuration reloaded: nothing changed that can change live")
        if restart:
            self.log.warn(
                "changed but needs a restart to take effect: {keys}", keys=", ".join(restart)
            )
        return applied, restart

    # the appliers named by the table's reload policies (chatd/options.py)

    def _reload_settings(self, fresh, rows) -> None:
        """Settings read on every request: the new value is used from the next one on."""
        for row in rows:
            setattr(self.factory.settings, row.setting, fresh[row.name])

    def _reload_protocol(self, fresh, rows) -> None:
        """autobahn reads these from the factory's protocol class: every
        connection, open or new, uses the new values."""
        self._reload_settings(fresh, rows)
        self.factory.apply_settings()

    def _reload_limits(self, fresh, rows) -> None:
        """Take the gate's rules and the rate/queue/room limits from *fresh* options."""
        self.factory.gate.update_from(fresh["gate"])
        self.factory.chat.apply_limits(fresh["settings"])
        self.factory.stop_housekeeping()
        self.factory.start_housekeeping()

    def _reload_log_level(self, fresh, rows) -> None:
        self.logs.set_level(fresh["log-level"])

    def _reload_api_key(self, fresh, rows) -> None:
        self.api_key.key = fresh["api-key"] or os.environ.get("CHATD_API_KEY") or None

    def _reload_word_list(self, fresh, rows) -> None:
        """Re-read the word list (a file that cannot be read keeps the old list)."""
        self.factory.chat.words.reload(fresh["word-list"])

    def _reload_webhooks(self, fresh, rows) -> None:
        self.webhooks.configure(fresh["webhook-url"], fresh["webhook-rooms"], fresh["webhook-push"])
