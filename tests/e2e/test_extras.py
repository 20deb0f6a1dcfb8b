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
            "boto3",
            ["--media-s3", "s3://bucket/prefix", "--jwt-secret", "x" * 32],
            "--media-s3 needs the Python package boto3, which is not installed: "
            "pip install 'boto3'",
        ),
    ],
    ids=["redis", "media-s3"],
)
def test_missing_optional_package_is_one_line_naming_option_and_package(
    tmp_path, module, args, line
):
    """``twistd -n chatd --redis …`` without txredisapi (or ``--media-s3`` without
    boto3) exits non-zero with one line naming the option and the package. (RS256/ES256
    keys need cryptography, which autobahn itself requires and imports.)"""
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
