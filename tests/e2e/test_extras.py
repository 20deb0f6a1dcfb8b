"""An option whose Python package is missing stops start-up with one line that names
the option and the package to install, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import chatd_env

#: twistd with *module* made unimportable (``sys.modules[name] = None`` makes every
#: ``import name`` raise ImportError), as after ``pip install --no-deps``
HIDE_AND_RUN = (
    "import sys; sys.modules[sys.argv.pop(1)] = None; "
    "from twisted.scripts.twistd import run; sys.exit(run())"
)


@pytest.mark.parametrize(
    "module,args,line",
    [
        (
            "txredisapi",
            ["--redis", "redis://127.0.0.1:1/0"],
            "--redis needs the Python package txredisapi, which is not installed: "
            "pip install 'txredisapi'",
        ),
        (
            "cryptography",
            ["--jwt-public-key", "key.pem"],
            "--jwt-public-key needs the Python package PyJWT[crypto], which is not installed: "
            "pip install 'PyJWT[crypto]'",
        ),
    ],
    ids=["redis", "jwt-public-key"],
)
def test_missing_optional_package_is_one_line_naming_option_and_package(
    tmp_path, module, args, line
):
    """``twistd -n chatd --redis …`` without txredisapi (or ``--jwt-public-key`` without
    cryptography) exits non-zero with one line naming the option and the package."""
    result = subprocess.run(
        [sys.executable, "-c", HIDE_AND_RUN, module, "-n", "chatd", *args],
        cwd=tmp_path,
        env=chatd_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert line in out, out
    assert "Traceback" not in out, out
