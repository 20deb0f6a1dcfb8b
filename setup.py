"""Only the optional C accelerator lives here; all other metadata is in setup.cfg.

``chatd/_fanout.c`` is the fan-out's per-recipient send loop in C. It is optional:
without a C compiler (or Python headers) the build prints a warning and chatd runs
its pure-Python loop, which does the same, more slowly.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("chatd._fanout", ["chatd/_fanout.c"], optional=True),
    ]
)
