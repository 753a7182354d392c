"""The repository holds source, not build artefacts: no wheel is committed (and .gitignore keeps it so)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_no_wheel_files_are_tracked() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files", "*.whl", "**/*.whl"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked == []
    ignored = subprocess.run(["git", "check-ignore", "-q", "some-package-1.0-py3-none-any.whl"], cwd=ROOT)
    assert ignored.returncode == 0, ".gitignore must ignore *.whl"
