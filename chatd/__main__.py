"""``python -m chatd [options]``: run chatd in the foreground, like ``twistd -n chatd``.

From a clone's root this works without installing (``python -m`` puts the
current directory on ``sys.path``, which the ``twistd`` script does not).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Run ``twistd --nodaemon --pidfile= chatd ARGV``."""
    from twisted.scripts.twistd import run

    args = sys.argv[1:] if argv is None else argv
    sys.argv = ["twistd", "--nodaemon", "--pidfile=", "chatd", *args]
    run()


if __name__ == "__main__":
    main()
