"""What a copy of the source tree leaves out."""

from __future__ import annotations

import shutil

COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    "node_modules",
    "miniprogram",
    "bench",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    "dropin.cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    ".benchmarks",
    "*.pid",
    "*.log",
    "*.sqlite3*",
    "*.so",
)
