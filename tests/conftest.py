"""Shared fixtures: tiny datasets in their real layouts (built by tests/fixtures.py)."""

from __future__ import annotations

import pytest

from fixtures import EnterfaceTree, make_enterface_tree


@pytest.fixture(scope="session")
def enterface_tree(tmp_path_factory: pytest.TempPathFactory) -> EnterfaceTree:
    """An irregular eNTERFACE'05 tree (subjects 1, 2, 3, 6, 11, 16), built once per session: do not modify
    it; call ``fixtures.make_enterface_tree`` for a tree of your own."""
    return make_enterface_tree(tmp_path_factory.mktemp("enterface") / "project2_database")
