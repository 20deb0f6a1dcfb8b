"""Dependencies that only some options use, checked when the option is given.

setup.cfg installs all of them with chatd, but an install made with ``--no-deps`` or a
package removed later would otherwise end in a traceback from deep inside start-up.
:func:`require` turns that into one line that names the option and the package.
"""

from __future__ import annotations

import importlib

from twisted.python import usage

#: option -> (module it imports, the distribution to install). (cryptography, which
#: RS256/ES256 keys need, is not here: autobahn itself requires and imports it.)
OPTIONAL = {
    "--redis": ("txredisapi", "txredisapi"),
    "--media-s3": ("boto3", "boto3"),
}


def require(option: str) -> None:
    """Raise :class:`usage.UsageError` naming *option* and the package to install when
    the module *option* needs cannot be imported."""
    module, package = OPTIONAL[option]
    try:
        importlib.import_module(module)
    except ImportError:
        raise usage.UsageError(
            f"{option} needs the Python package {package}, which is not installed: "
            f"pip install '{package}'"
        ) from None
