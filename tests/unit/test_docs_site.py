"""The documentation site builds with `mkdocs build --strict` (what `make docs` runs), so a broken link, a
missing anchor or a page left out of the navigation fails `make test`; and the configuration reference
covers every section and key of `tonebridge.config`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from tonebridge.config import Config, parse_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGURATION = ROOT / "docs" / "configuration.md"


def test_docs_build_strict(tmp_path: Path) -> None:
    missing = [name for name in ("mkdocs", "material") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (the test extras install mkdocs-material)")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        # The theme's notice about its own end of life is not about these pages.
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    assert (tmp_path / "site" / "index.html").exists()


def _sections() -> dict[str, type[BaseModel]]:
    """Each top-level key of the configuration and the model of its table (or of each array entry)."""
    sections = {}
    for name, field in Config.model_fields.items():
        model = field.annotation
        if typing.get_origin(model) is list:
            (model,) = typing.get_args(model)
        elif typing.get_origin(model) in (typing.Union, types.UnionType):
            # An optional section (`[cluster]`): absent unless set.
            (model,) = [arg for arg in typing.get_args(model) if arg is not type(None)]
        assert isinstance(model, type) and issubclass(model, BaseModel), name
        sections[name] = model
    return sections


def _section_text(page: str, name: str, array: bool) -> str:
    heading = f"## `[[{name}]]`" if array else f"## `[{name}]`"
    assert heading in page, f"docs/configuration.md has no section {heading!r}"
    body = page.split(heading, 1)[1]
    return body.split("\n## ", 1)[0]


def test_configuration_reference_covers_every_key() -> None:
    page = CONFIGURATION.read_text(encoding="utf-8")
    for name, model in _sections().items():
        array = typing.get_origin(Config.model_fields[name].annotation) is list
        text = _section_text(page, name, array)
        for key in model.model_fields:
            assert f"| `{key}` |" in text, f"docs/configuration.md: `{key}` of [{name}] is not documented"
        documented = re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.MULTILINE)
        unknown = set(documented) - set(model.model_fields)
        assert not unknown, f"docs/configuration.md documents keys [{name}] does not have: {sorted(unknown)}"


def test_configuration_example_is_valid() -> None:
    page = CONFIGURATION.read_text(encoding="utf-8")
    example = page.split("## A complete example", 1)[1]
    toml = re.search(r"```toml\n(.*?)```", example, flags=re.DOTALL)
    assert toml is not None
    config = parse_config(toml.group(1), "docs/configuration.md")
    # Every section, but for the cluster's: the example is of a server on its own (docs/cluster.md has a node's).
    assert all(getattr(config, name) for name in Config.model_fields if name != "cluster"), (
        "the example should set every section"
    )
