"""Hostile inputs: names that would become paths outside the project's folders, YAML built to expand without
bound, numbers that size memory, threads or files, a device the machine lacks, a read-only dataset cache and
a stop signal during a dataset build. Each is refused (or made safe) with a message naming the file, key or
value and what was expected, before anything is written; no command shows a traceback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faults.launcher import STARTED_LINE
from mtl.ablate.entry import EntryError, load_entries, load_entry
from mtl.ablate.planner import make_plan
from mtl.config import ConfigError, load_yaml, make_config
from support import REPO, ablate_here, forked_train, tiny_ablations, tiny_args, train_command, write_tiny_entry

ABLATE = [sys.executable, "-m", "mtl.suite"]


def files_under(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def run_command(argv: list[str], cwd: Path, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environment)


def assert_refused(result: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 2, no traceback, a message on stderr that holds every one of ``words``."""
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    for word in words:
        assert word in result.stderr, (word, result.stderr[-2000:])


@pytest.fixture
def project(tmp_path) -> Path:
    """A folder three levels down a private tree, with an ablations folder holding the ``tiny`` profile:
    ``../../..`` from it is still inside ``tmp_path``, where the test can see anything written."""
    folder = tmp_path / "a" / "b" / "c"
    tiny_ablations(folder / "ablations")
    return folder


@pytest.fixture
def ablate_in(monkeypatch, capsys):
    """``mtl-ablate *argv`` run in ``project`` on its entry and runs folders, through main in this process (what
    is refused here is refused before anything runs; the YAML bombs below keep a process and a time limit)."""
    def call(project: Path, *argv: str) -> subprocess.CompletedProcess:
        monkeypatch.chdir(project)
        return ablate_here(capsys, *argv, "--ablations-dir", "ablations", "--runs-dir", "runs")
    return call


# ----------------------------------------------------------------------------------- names that become paths
@pytest.mark.parametrize("name", ["../../../escape", "a/b", "..", ".hidden", "x\x01y"])
def test_an_adhoc_name_that_is_no_single_safe_name_is_refused_and_nothing_is_written(project, tmp_path, name,
                                                                                      ablate_in):
    before = files_under(tmp_path)
    result = ablate_in(project, "run", "--grid", "optimizer_lr=0.01", "--base", "tiny", "--name", name, "--dry-run")
    assert_refused(result, "--name")
    assert files_under(tmp_path) == before


def test_save_with_a_name_that_climbs_out_is_refused(project, tmp_path, ablate_in):
    before = files_under(tmp_path)
    result = ablate_in(project, "run", "--grid", "optimizer_lr=0.01", "--base", "tiny", "--name",
                       "../../../../outside-abl", "--save", "--dry-run")
    assert_refused(result, "--name")
    assert files_under(tmp_path) == before


def test_a_dry_run_writes_nothing(project, tmp_path, ablate_in):
    before = files_under(tmp_path)
    result = ablate_in(project, "run", "--grid", "optimizer_lr=0.01,0.1", "--base", "tiny", "--name", "lr", "--save",
                       "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "adhoc.lr" in result.stdout
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("profile", ["../../escape", "../profiles/tiny", ".hidden", "a" * 300])
def test_a_profile_name_that_is_a_path_is_refused(project, profile, ablate_in):
    write_tiny_entry(project / "ablations", "problem1.pair", grid={"optimizer_lr": [0.01, 0.1]})
    (project / "escape.yaml").write_text("num_epochs: 1\n")  # what ablations/profiles/../../escape reaches
    (project / "ablations" / "profiles" / ".hidden.yaml").write_text("num_epochs: 1\n")
    result = ablate_in(project, "show", "problem1.pair", "--profile", profile)
    assert_refused(result, "profile", repr(profile)[:40])


def test_an_adhoc_id_that_is_a_path_is_not_read_from_outside_the_runs_folder(project, ablate_in):
    outside = project / "escape" / "entry.yaml"  # runs/adhoc.../../../escape/entry.yaml
    outside.parent.mkdir()
    (project / "runs" / "adhoc...").mkdir(parents=True)  # left by an earlier escape
    outside.write_text("question: q\nitem: '0'\nbase: tiny\ngrid: {optimizer_lr: [0.01]}\n")
    result = ablate_in(project, "show", "adhoc.../../../escape")
    assert_refused(result, "unknown entry")


PATH_VALUES = ["../../../../escaped/w.pth", "b.pth", "/abs/w.pth", "a%2Fb", "a/b", "x\x00y", "..", "."]


def test_grid_values_like_paths_become_single_safe_names_that_stay_distinct(project):
    ablations = project / "ablations"
    write_tiny_entry(ablations, "problem1.weights", grid={"pretrained_weights_path": PATH_VALUES})
    runs = project / "runs"
    plan = make_plan(load_entries(ablations)["problem1.weights"], "tiny", runs)
    names = [run.name for run in plan.runs]
    assert len(set(names)) == len(PATH_VALUES), names
    for run in plan.runs:
        assert run.run_dir.parent == runs.absolute() / "problem1.weights", run.run_dir
        assert "/" not in run.name and "\x00" not in run.name and not run.name.startswith("."), run.name
    assert plan.runs[0].variant == "pretrained_weights_path=..%2F..%2F..%2F..%2Fescaped%2Fw.pth"
    assert plan.runs[1].variant == "pretrained_weights_path=b.pth"  # a plain value keeps its name


# ----------------------------------------------------------------------------------- YAML built to expand
def laughs(levels: int = 9, width: int = 9) -> str:
    """A YAML "billion laughs" as one list: each anchor a list of ``width`` aliases of the one before (about
    1 KB for 9 levels; expanded, 9**9 strings)."""
    items = ["&l0 [" + ", ".join(["lol"] * width) + "]"]
    items += [f"&l{level} [{', '.join([f'*l{level - 1}'] * width)}]" for level in range(1, levels)]
    return "[" + ", ".join(items) + "]"


# Flow mappings of config keys: a whole config file or profile, or an entry's overrides.
BOMBS = {
    "laughs": "{aspp_rates: " + laughs() + "}",
    "alias": "{aspp_rates: &b [1, 2, 3], wandb_tags: *b}",
    "deep": "{aspp_rates: " + "[" * 5000 + "]" * 5000 + "}",
    "huge int": "{seed: " + "9" * 5000 + "}",
    "bad date": "{seed: 2001-13-45}",
}


@pytest.mark.parametrize("kind", BOMBS)
def test_a_config_file_built_to_expand_is_refused_naming_the_file(tmp_path, kind):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMBS[kind] + "\n")
    result = run_command(train_command(f"--config={path}", f"--log_dir={tmp_path / 'run'}"), cwd=tmp_path, timeout=30)
    assert_refused(result, str(path))
    assert len(result.stderr) < 2000, result.stderr[:3000]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", BOMBS)
def test_an_entry_or_profile_built_to_expand_is_refused_naming_the_file(project, kind):
    ablations = project / "ablations"
    entry = ablations / "problem1.bomb.yaml"
    entry.write_text(f"question: q\nitem: '1.1'\nbase: tiny\noverrides: {BOMBS[kind]}\n")
    result = run_command([*ABLATE, "list", "--ablations-dir", "ablations", "--runs-dir", "runs"], cwd=project,
                         timeout=30)
    assert_refused(result, "problem1.bomb.yaml")
    assert len(result.stderr) < 2000, result.stderr[:3000]
    entry.unlink()
    (ablations / "profiles" / "tiny.yaml").write_text(BOMBS[kind] + "\n")
    write_tiny_entry(ablations, "problem1.pair", grid={"optimizer_lr": [0.01, 0.1]})
    result = run_command([*ABLATE, "show", "problem1.pair", "--ablations-dir", "ablations", "--runs-dir", "runs"],
                         cwd=project, timeout=30)
    assert_refused(result, "tiny.yaml")
    assert len(result.stderr) < 2000, result.stderr[:3000]


def test_an_alias_in_an_entry_is_refused_where_it_is_read(tmp_path):
    """The whole expanded value used to be quoted in the error (gigabytes)."""
    path = tmp_path / "problem1.laughs.yaml"
    path.write_text(f"question: q\nitem: '1.1'\nbase: tiny\noverrides: {BOMBS['laughs']}\n")
    with pytest.raises(EntryError, match="alias") as error:
        load_entry(path)
    assert str(path) in str(error.value) and "line 4" in str(error.value) and len(str(error.value)) < 1000


def test_a_huge_value_is_quoted_cut_short(tmp_path):
    path = tmp_path / "problem1.long.yaml"
    values = ", ".join(["x" * 1000] * 200)
    path.write_text(f"question: q\nitem: '1.1'\nbase: tiny\noverrides:\n  aspp_rates: [{values}]\n")
    with pytest.raises(EntryError, match="aspp_rates") as error:
        load_entry(path)
    assert len(str(error.value)) < 1000, len(str(error.value))
    with pytest.raises(ConfigError, match="seed") as error:
        make_config({"seed": "y" * 100_000})
    assert len(str(error.value)) < 1000


def test_an_oversized_yaml_file_is_refused_unread(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * 200_000 + "seed: 1\n")
    with pytest.raises(ConfigError, match="larger than"):
        load_yaml(path)


@pytest.mark.parametrize("value", ["[*a]", "[&a 1, *a, 2]", "[" * 100 + "]" * 100])
def test_a_list_value_on_the_command_line_is_read_without_aliases(value):
    with pytest.raises(ConfigError, match="aspp_rates"):
        make_config({"aspp_rates": value})


# ----------------------------------------------------------------------------------- numbers that size things
# Values that were accepted and then started 10,000 threads, crashed libgomp, grew past 12 GB or failed the run
# after its directory existed. Each is refused by the schema, naming the key and the bound.
ABSURD = {
    "num_threads": 5000,
    "workers": 100_000,
    "workers_validation": 100_000,
    "seed": 2**64,
    "synthetic_seed": 2**64,
    "synthetic_num_train": 10**9,
    "synthetic_height": 1_000_000,
    "synthetic_width": 1_000_000,
    "batch_size": 10**9,
    "batch_size_validation": 10**9,
    "aug_input_crop_size": 1_000_000,
    "num_epochs": 10**12,
    "optimizer_lr": 1e300,
    "optimizer_weight_decay": 1e308,
    "lr_scheduler_power": 1e300,
    "aug_geom_scale_max": 1e300,
    "aug_geom_scale_min": 1e-300,
    "loss_weight_semseg": 1e300,
    "loss_weight_initial": 1e300,
    "aspp_channels": 10**6,
    "decoder_skip_channels": 10**6,
    "aspp_rates": (1, 1, 10**6),
    "visualize_num_images": 10**9,
    "wandb_init_timeout_s": 1e300,
    "wandb_finish_timeout_s": 1e300,
}


@pytest.mark.parametrize("key", ABSURD)
def test_an_absurd_number_is_refused_naming_the_key_and_the_bound(key):
    with pytest.raises(ConfigError, match=key) as error:
        make_config({key: ABSURD[key]})
    assert "at most" in str(error.value) or "at least" in str(error.value), str(error.value)
    assert len(str(error.value)) < 1000


@pytest.mark.parametrize("key", ["num_threads", "workers"])
def test_a_thread_bound_says_what_the_machine_has(key):
    with pytest.raises(ConfigError, match=f"{os.cpu_count()} CPU cores"):
        make_config({key: 100_000})


@pytest.mark.parametrize("key", ["batch_size", "batch_size_validation", "synthetic_height", "aug_input_crop_size"])
def test_a_memory_bound_states_the_estimate_and_the_memory_the_machine_has(key):
    with pytest.raises(ConfigError) as error:
        make_config({key: ABSURD[key]})
    assert "memory" in str(error.value) and "this machine has" in str(error.value), str(error.value)


def test_a_big_but_sane_configuration_is_accepted():
    """Generous: a GPU-sized batch and crop, and the most threads the machine can use, pass."""
    cfg = make_config({"batch_size": 16, "aug_input_crop_size": 512, "batch_size_validation": 16,
                       "synthetic_height": 1024, "synthetic_width": 2048, "num_threads": os.cpu_count(),
                       "workers": 16, "seed": 2**32 - 1, "optimizer_lr": 1e6})
    assert cfg.seed == 2**32 - 1


@pytest.mark.parametrize("argument", ["--num_threads=100000", "--seed=18446744073709551616",
                                      "--synthetic_height=1000000", "--batch_size_validation=1000000000",
                                      "--aug_input_crop_size=1000000", "--optimizer_weight_decay=1e308"])
def test_mtl_train_refuses_an_absurd_number_before_creating_anything(tmp_path, argument):
    # A dataset folder that is a file: were the value accepted, the run would fail at once, not train or build.
    (tmp_path / "not-a-folder").write_text("")
    log_dir = tmp_path / "run"
    result = run_command(train_command(argument, "--dataset=synthetic", f"--dataset_root={tmp_path / 'not-a-folder'}",
                                       f"--log_dir={log_dir}", "--wandb_mode=disabled"), cwd=tmp_path)
    assert_refused(result, argument.split("=")[0][2:])
    assert not log_dir.exists()


def test_an_entry_with_an_absurd_number_is_refused_before_a_run_exists(project, ablate_in):
    write_tiny_entry(project / "ablations", "problem1.threads", grid={"num_threads": [1, 5000]})
    result = ablate_in(project, "show", "problem1.threads")
    assert_refused(result, "problem1.threads.yaml", "num_threads")
    (project / "ablations" / "problem1.threads.yaml").unlink()
    write_tiny_entry(project / "ablations", "problem1.batch", grid={"batch_size_validation": [4, 10**9]})
    result = ablate_in(project, "run", "problem1.batch", "--dry-run")
    assert_refused(result, "problem1.batch.yaml", "batch_size_validation")
    assert not (project / "runs" / "problem1.batch").exists()


def test_an_entry_seed_past_32_bits_is_refused_when_the_entry_is_read(tmp_path):
    path = write_tiny_entry(tmp_path, "problem1.seeds", seeds=[0, 2**64])
    with pytest.raises(EntryError, match="seeds") as error:
        load_entry(path)
    assert str(2**32 - 1) in str(error.value)


# ----------------------------------------------------------------------------------- a device the machine lacks
def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.parametrize("device", ["cuda", "cuda:99", "cuda:0"])
def test_a_cuda_device_the_machine_lacks_is_refused_before_anything_is_written(tmp_path, device):
    index = int(device.partition(":")[2] or 0)
    if index < _cuda_devices():
        pytest.skip(f"this machine has {device}")
    log_dir = tmp_path / "run"
    result = forked_train(log_dir, f"--device={device}", "--wandb_mode=disabled")  # as `mtl-ablate run` starts it
    assert_refused(result, "device", repr(device))
    said = [line for line in result.stderr.splitlines() if line != STARTED_LINE]
    assert len(said) == 1, result.stderr
    assert not log_dir.exists()


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cuda:-1", "CPU ", "cuda:0:1"])
def test_a_device_that_is_no_device_name_is_a_config_error(device):
    with pytest.raises(ConfigError, match="device"):
        make_config({"device": device})


# ----------------------------------------------------------------------------------- a read-only dataset cache
CACHE_TINY = {"synthetic_num_train": 4, "synthetic_num_val": 2, "synthetic_num_test": 2, "synthetic_height": 64,
              "synthetic_width": 64}


def make_read_only(cache: Path) -> None:
    """``chmod -R a-w`` the cache. Root writes through permissions, so for root the places the cache's users
    write are also made impossible to create: a folder where each build lock file goes (no file can be
    opened there) and a file where the integrity cache's folder goes."""
    if os.geteuid() == 0:
        for lock in cache.glob(".*.build-lock"):
            lock.unlink()
        for dataset in cache.glob("synthetic-*"):
            (cache / f".{dataset.name}.build-lock").mkdir()
        if (cache / "integrity").is_dir():
            shutil.rmtree(cache / "integrity")
        (cache / "integrity").write_text("")
    for path in [cache, *cache.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)


def make_writable(cache: Path) -> None:
    for path in [cache, *cache.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)


@pytest.fixture
def read_only_cache(tmp_path, monkeypatch):
    """A cache holding a complete tiny synthetic dataset, then made read-only; writable again afterwards so
    that pytest can delete it."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MTL_CACHE_DIR", str(cache))
    from mtl.data import build_datasets
    from mtl.data.integrity import check_data_before_training

    cfg = make_config(CACHE_TINY)
    shutil.rmtree(cache / "integrity", ignore_errors=True)  # so that its users have to write it again
    root = build_datasets(cfg)["train"].root
    make_read_only(cache)
    yield cfg, root, check_data_before_training
    make_writable(cache)


def test_a_complete_read_only_cache_serves_its_dataset(read_only_cache):
    from mtl.data import build_datasets

    cfg, root, check_data_before_training = read_only_cache
    datasets = build_datasets(cfg)  # took the build lock, which cannot be created here
    assert datasets["train"].root == root and len(datasets["train"]) == 4
    check_data_before_training(datasets)  # its integrity cache cannot be written either


@pytest.mark.slow
def test_training_and_grading_on_a_read_only_cache(tmp_path, monkeypatch, capsys):
    """A shared cluster cache is mounted read-only: a run trains on the dataset it holds and `grade` scores
    against it, though neither can take the build lock nor write the integrity cache."""
    cache = tmp_path / "cache"
    env = {"MTL_CACHE_DIR": str(cache)}
    tiny = tiny_args(**CACHE_TINY, num_epochs=1)
    first = forked_train(tmp_path / "first", *tiny, env=env)
    assert first.returncode == 0, first.stdout[-3000:]
    shutil.rmtree(cache / "integrity")  # so that the next run has to check and to try to write it
    make_read_only(cache)
    try:
        second = forked_train(tmp_path / "second", *tiny, "--seed=1", env=env)
        assert second.returncode == 0, second.stdout[-3000:]
        monkeypatch.setenv("MTL_CACHE_DIR", str(cache))
        graded = ablate_here(capsys, "grade", str(tmp_path / "first" / "submission.zip"), "--json")
        assert graded.returncode == 0, graded.stderr[-3000:]
        assert '"grader"' in graded.stdout
    finally:
        make_writable(cache)


# ----------------------------------------------------------------------------------- a stop during a dataset build
# 3,000 images take minutes to draw: long enough that a stop taking effect at the end of the build is plain.
LONG_BUILD = {"synthetic_num_train": 3000, "synthetic_num_val": 2, "synthetic_num_test": 2, "synthetic_height": 64,
              "synthetic_width": 64}


def wait_for_build(cache: Path, process: subprocess.Popen, timeout: float = 60) -> None:
    """Until the build's temporary folder holds a first image (the build is under way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(cache.glob(".*.tmp-*/train/rgb/0.jpg")):
            return
        if process.poll() is not None:
            pytest.fail(f"ended before the build started: {process.communicate()}")
        time.sleep(0.05)
    pytest.fail("the build never started")


def with_default_stop_signals() -> None:
    """Run in the child before it starts: SIGINT at its default, as a command started from a terminal has it.
    A suite started in the background by a non-interactive shell ignores SIGINT, its children inherit that,
    and the dataset command rightly leaves an ignored signal ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_and_wait(process: subprocess.Popen, signum: int, within: float) -> tuple[float, str]:
    """Send ``signum``; (seconds until the process ended, its stderr). Killed if it takes longer than
    ``within`` seconds, failing the test."""
    sent = time.monotonic()
    process.send_signal(signum)
    try:
        _, err = process.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"still running {within} s after {signal.Signals(signum).name}")
    return time.monotonic() - sent, err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_ends_a_training_in_its_dataset_build_at_once_leaving_nothing_half_built(tmp_path, signum):
    cache, log_dir = tmp_path / "cache", tmp_path / "run"
    argv = train_command(*tiny_args(**LONG_BUILD), f"--log_dir={log_dir}")
    process = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO), "MTL_CACHE_DIR": str(cache)},
                               preexec_fn=with_default_stop_signals)
    wait_for_build(cache, process)
    _, err = stop_and_wait(process, signum, within=15)
    assert process.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "building the synthetic dataset" in err, err[-3000:]
    assert not list(cache.glob(".synthetic-*.tmp-*")) and not list(cache.glob("synthetic-*"))
    status = json.loads((log_dir / "status.json").read_text())
    assert status["state"] == "interrupted" and signal.Signals(signum).name in status["error"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_ends_the_dataset_command_at_once_leaving_nothing_half_built(tmp_path, signum):
    root = tmp_path / "data"
    argv = [sys.executable, "-m", "mtl.data.synthetic", "--root", str(root), "--num_train", "3000", "--num_val", "2",
            "--num_test", "2", "--height", "64", "--width", "64"]
    process = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=with_default_stop_signals)
    wait_for_build(tmp_path, process)
    _, err = stop_and_wait(process, signum, within=15)
    assert process.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".build-lock")] == []


def test_a_later_build_removes_what_killed_builds_left_and_spares_a_build_under_way(tmp_path):
    from filelock import FileLock

    from mtl.data.synthetic import SyntheticParams, build_synthetic

    killed = tmp_path / ".synthetic-0000000000.tmp-abc123"  # a build of another dataset, killed by SIGKILL
    (killed / "train" / "rgb").mkdir(parents=True)
    (tmp_path / ".synthetic-0000000000.build-lock").write_text("")
    running = tmp_path / ".synthetic-1111111111.tmp-def456"  # one under way: its builder holds the lock
    running.mkdir()
    with FileLock(str(tmp_path / ".synthetic-1111111111.build-lock")):
        build_synthetic(tmp_path / "synthetic-2222222222", SyntheticParams(2, 1, 1, 64, 64, 0))
    assert not killed.exists() and running.is_dir()


def test_a_stop_received_before_the_build_stops_it_before_it_starts(tmp_path):
    from mtl.data.synthetic import BuildStopped, SyntheticParams, build_synthetic
    from mtl.run.stopping import StopSignals

    stop = StopSignals()
    saved = {signum: signal.getsignal(signum) for signum in stop.signals}
    stop.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # remembered by mtl-train's handlers, as during its set-up
        assert stop.last == signal.SIGTERM
        with pytest.raises(BuildStopped, match="SIGTERM"):
            build_synthetic(tmp_path / "synthetic-3333333333", SyntheticParams(2, 1, 1, 64, 64, 0))
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".build-lock")] == []
