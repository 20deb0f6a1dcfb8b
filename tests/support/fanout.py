"""Which fan-out loop a test runs with."""

from __future__ import annotations

import importlib.util

from chatd import fanout

C_BUILT = importlib.util.find_spec("chatd._fanout") is not None


BUILD_HINT = "chatd._fanout (build it in place: python3 setup.py build_ext --inplace)"


def use_impl(server, impl):
    """Make *server*'s factory fan out with *impl* ("c", "python" or "transport")."""
    out = server.factory.fanout
    if impl == "transport":
        assert not out.direct
        assert out.describe() == (
            "transport.write only (direct sends off: "
            "twisted.internet.tcp.Connection has no _renamed)"
        )
        return
    if impl == "python":
        out.send_all = fanout.send_all_py
        out.impl = "python"
    assert out.direct and out.impl == impl
