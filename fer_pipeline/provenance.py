"""Provenance: which code and which parameters made an array or a table."""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from . import __version__

REPO_ROOT = Path(__file__).resolve().parent.parent


def fingerprint(value: Any) -> str:
    """SHA-256 of a JSON-serialisable value in canonical form (sorted keys): equal parameters, equal hash."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@functools.cache
def code_version() -> dict[str, Any]:
    """The package version and, when run from a git checkout, its commit and whether files were modified."""
    info: dict[str, Any] = {"package": "fer-pipeline", "version": __version__}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "fer_pipeline"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True).stdout
        info.update(git_commit=commit, git_dirty=bool(dirty.strip()))
    except (OSError, subprocess.SubprocessError):
        info.update(git_commit=None, git_dirty=None)
    return info
