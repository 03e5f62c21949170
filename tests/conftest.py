"""Shared fixtures: every test runs offline with W&B disabled and a private dataset cache. Shared code
that is not a fixture lives in support.py."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from support import ABLATIONS

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MTL_OFFLINE", "1")  # no test downloads ImageNet weights from the internet
# pytest-xdist gives its workers COLUMNS=80; the commands' tables would wrap there and not in a plain run.
# A test that checks a width sets COLUMNS itself.
os.environ.pop("COLUMNS", None)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One dataset cache for the session, shared with subprocesses through MTL_CACHE_DIR."""
    path = tmp_path_factory.mktemp("mtl-cache")
    os.environ["MTL_CACHE_DIR"] = str(path)
    return path


@pytest.fixture
def ablations(tmp_path) -> Path:
    """An empty entry folder with the real profiles."""
    folder = tmp_path / "ablations"
    shutil.copytree(ABLATIONS / "profiles", folder / "profiles")
    return folder


@pytest.fixture(autouse=True)
def _fresh_wandb_setup():
    """wandb keeps one settings object per process, read from the environment when first used (a test's
    fake key among them); tear it down after each test so no test sees another's W&B environment."""
    yield
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()
