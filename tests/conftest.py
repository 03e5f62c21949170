"""Shared fixtures: every test runs offline with W&B disabled and a private dataset cache. Shared code
that is not a fixture lives in support.py."""

from __future__ import annotations

import os
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

from support import ABLATIONS

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MTL_OFFLINE", "1")  # no test downloads ImageNet weights from the internet
# pytest-xdist gives its workers COLUMNS=80; the commands' tables would wrap there and not in a plain run.
# A test that checks a width sets COLUMNS itself.
os.environ.pop("COLUMNS", None)


def _own_cores_per_xdist_worker() -> None:
    """Give each pytest-xdist worker its own share of the cores. The trainings a test starts inherit it, and
    the suite sizes a CPU run's threads by the cores it may use: otherwise each worker's runs take every
    core, and two workers' torch threads fight over them."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    share = cores[int(worker.removeprefix("gw")) % count::count]
    if share:
        os.sched_setaffinity(0, share)


_own_cores_per_xdist_worker()


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


# The files that take longest, longest first (pytest --durations on an idle 2-core machine; test_device_options
# compiles with inductor, about 30 s on a machine without its cache).
LONGEST_FILES = ("test_slurm_cluster.py", "test_ablate_sweep.py", "test_ablate_run.py", "test_hostile_inputs.py",
                 "test_multitask_training.py", "test_records.py", "test_race_live.py", "test_faults_suite.py",
                 "test_faults_process_group.py", "test_faults_preemption.py", "test_engine.py",
                 "test_device_options.py", "test_records_check.py", "test_faults_storage.py", "test_stall.py",
                 "test_tracking_wandb.py", "test_models.py", "test_archive_limits.py")


def pytest_collection_modifyitems(items):
    """The longest files first, then the rest by their number of slow tests. pytest-xdist hands out whole
    files (--dist loadfile) in this order, so the suite ends on short files instead of one worker still
    running a long one while the other waits. The order within a file is kept."""
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))

    def rank(item) -> tuple[int, int]:
        name = item.path.name
        return (LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES), -slow[item.path])

    items.sort(key=rank)


# A test's runs hold full-size checkpoints (a ResNet-34 is 85 MB): kept until the session ends, the suite
# would need several GB of free disk. A passed test's folder goes as soon as it passes; a failed one's stays
# for reading (and pytest keeps only the last session's, see tmp_path_retention_count).
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.passed and "tmp_path" in getattr(item, "funcargs", {}):
        item.stash[_PASSED_TMP_PATH] = item.funcargs["tmp_path"]
    elif report.when == "teardown" and report.passed and _PASSED_TMP_PATH in item.stash:
        shutil.rmtree(item.stash[_PASSED_TMP_PATH], ignore_errors=True)
    return report


_PASSED_TMP_PATH = pytest.StashKey[Path]()
