"""The W&B mirror at its boundary: whose credentials count, what one line says, a server that cannot be
reached, interrupted runs. No network: the only server address used is a recording stand-in on
127.0.0.1, which answers nothing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from faults.secrets import scan_for_secrets
from faults.wandb_outage import WANDB_VARIABLES, RecordingBlackHole, default_base_url, outage_environment, write_netrc
from mtl.config import make_config
from mtl.train.tracking import (
    BEST_GRADER_SUMMARY,
    WandbIdentity,
    WandbSink,
    decide_wandb_mode,
    derive_run_id,
    records_summary,
    wandb_identity,
)
from support import REPO, TINY, tiny_args, train_command
from wandb_records import read_records as wandb_records


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A private HOME without W&B credentials, and a wandb that reads its settings afresh."""
    import wandb

    home = tmp_path / "home"
    home.mkdir()
    for name in WANDB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / ".config" / "wandb"))
    wandb.teardown()  # wandb loads its settings (WANDB_BASE_URL...) once per process
    yield home
    wandb.teardown()


def auto_config(**overrides):
    return make_config({**TINY, "wandb_mode": "auto", **overrides})


# ------------------------------------------------------------------------------ the mode and why
def test_an_api_key_in_the_environment_means_online(home, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    mode, why = decide_wandb_mode(auto_config())
    assert mode == "online" and "$WANDB_API_KEY" in why and default_base_url() in why
    assert "k" * 40 not in why


def test_a_netrc_entry_for_wandbs_default_host_means_online(home):
    netrc = write_netrc(home, default_base_url())
    mode, why = decide_wandb_mode(auto_config())
    assert (mode, why) == ("online", f"credentials for {default_base_url()} found in {netrc}")


def test_a_self_hosted_server_needs_a_netrc_entry_for_its_own_host(home, monkeypatch):
    write_netrc(home, default_base_url())
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    import wandb

    wandb.teardown()
    mode, why = decide_wandb_mode(auto_config())
    assert mode == "offline" and "no W&B credentials for http://127.0.0.1:9" in why

    netrc = write_netrc(home, "http://127.0.0.1:9")
    mode, why = decide_wandb_mode(auto_config())
    assert (mode, why) == ("online", f"credentials for http://127.0.0.1:9 found in {netrc}")


def test_no_credentials_means_offline_and_says_for_which_server(home):
    mode, why = decide_wandb_mode(auto_config())
    assert mode == "offline" and why.startswith(f"no W&B credentials for {default_base_url()}")


def test_a_malformed_key_means_offline_without_showing_the_key(home, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "short-key!")
    mode, why = decide_wandb_mode(auto_config())
    assert mode == "offline" and "unusable" in why and "short-key!" not in why


def test_wandb_mode_and_the_config_key_win_over_credentials(home, monkeypatch):
    write_netrc(home, default_base_url())
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert decide_wandb_mode(auto_config()) == ("disabled", "WANDB_MODE=disabled")
    monkeypatch.setenv("WANDB_MODE", "dryrun")  # wandb's older name for offline
    assert decide_wandb_mode(auto_config())[0] == "offline"
    assert decide_wandb_mode(auto_config(wandb_mode="disabled")) == ("disabled", "wandb_mode=disabled")
    monkeypatch.setenv("WANDB_MODE", "onlien")
    with pytest.raises(ValueError, match="WANDB_MODE='onlien' is not a W&B mode"):
        decide_wandb_mode(auto_config())


def test_the_start_line_says_disabled_and_why(home, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    sink = WandbSink(auto_config(), tmp_path / "run", "r1")
    assert sink.run is None and sink.run_id is None
    assert capsys.readouterr().out == "mtl-train: W&B disabled (WANDB_MODE=disabled)\n"


# ------------------------------------------------------------------------------ one W&B run per run directory
def test_the_recorded_wandb_run_is_continued_and_a_forced_new_id_carries_the_history(tmp_path):
    run_dir = tmp_path / "runs" / "problem1.lr" / "sgd-s0-abc"
    derived = derive_run_id(run_dir)
    assert wandb_identity(None, None, run_dir) == WandbIdentity(derived, None, holds_history=False)
    assert wandb_identity(None, "x1", run_dir) == WandbIdentity("x1")  # `run`, a requeued job: the same run
    assert wandb_identity("x1", "x1", run_dir) == WandbIdentity("x1")  # a sweep requeue resumes its own id
    # An agent's id on a directory another W&B run already mirrors: a new run that carries it on.
    assert wandb_identity("agent7", "x1", run_dir) == WandbIdentity("agent7", "x1", holds_history=False)
    assert wandb_identity("agent7", None, run_dir) == WandbIdentity("agent7", None, holds_history=False)


def test_the_summary_of_the_records_holds_the_best_point_and_the_model(tmp_path):
    from mtl.run.model import ModelSize, RunState, Status, ValidationPoint

    best = ValidationPoint(step=8, epoch=2, grader=3.5, iou=20.0, si_logrmse=46.5)
    status = Status(state=RunState.RUNNING, best=best, model=ModelSize(params=10, gflops=1.5))
    assert records_summary(status) == {"best/step": 8, "best/epoch": 2, "best/grader": 3.5, "best/iou": 20.0,
                                       "best/si_logrmse": 46.5, "model/params": 10, "model/gflops": 1.5}
    assert BEST_GRADER_SUMMARY in records_summary(status)
    assert records_summary(Status(state=RunState.RUNNING)) == {} and records_summary(None) == {}


# ------------------------------------------------------------------------------ offline run files
def offline_run_file(run_dir: Path) -> Path:
    """The run's offline ``.wandb`` file, complete: wandb's service writes it until it is torn down."""
    import wandb

    wandb.teardown()
    (path,) = (run_dir / "wandb").glob("offline-run-*/*.wandb")
    return path


def test_an_interrupted_offline_run_is_recorded_preempted_not_failed(home, tmp_path, capsys):
    run_dir = tmp_path / "run"
    sink = WandbSink(auto_config(wandb_console=False, wandb_system_metrics=False), run_dir, "interrupted1")
    assert sink.mode == "offline"
    line = capsys.readouterr().out
    assert line.startswith("mtl-train: W&B offline (no W&B credentials for ")
    assert f"upload later with: wandb sync {run_dir / 'wandb'}/offline-run-" in line
    sink.log({"step": 2, "epoch": 1, "time": 0.1, "train/loss": 1.0})
    sink.interrupted(exit_code=143)
    assert sink.run is None

    records = wandb_records(offline_run_file(run_dir))
    kinds = [r.WhichOneof("record_type") for r in records]
    exits = [r.exit.exit_code for r in records if r.HasField("exit")]
    # W&B takes a run marked preempting that then exits non-zero as preempted (a sweep requeues it).
    assert "preempting" in kinds and kinds.index("preempting") < kinds.index("exit") and exits == [143]


def test_images_are_logged_on_the_trainer_step(home, tmp_path):
    run_dir = tmp_path / "run"
    sink = WandbSink(auto_config(wandb_console=False, wandb_system_metrics=False), run_dir, "images1")
    sink.images([np.zeros((8, 40, 3), np.uint8)], np.array([1.0, 2.0, np.nan]), step=4)
    sink.finish()
    records = wandb_records(offline_run_file(run_dir))
    metrics = {r.metric.glob_name or r.metric.name: r.metric.step_metric for r in records if r.HasField("metric")}
    assert metrics["val_images/*"] == "trainer/step" and metrics["val/*"] == "trainer/step"
    (history,) = [r.history for r in records if r.HasField("history")]
    items = {item.key or "/".join(item.nested_key): item.value_json for item in history.item}
    assert json.loads(items["trainer/step"]) == 4
    assert any(key.startswith("val_images/panels") for key in items)  # a media item is nested under its key


def history_points(run_dir: Path) -> list[dict]:
    """Every history row of the run's offline files (all attempts), as ``{key: value}``."""
    import wandb

    wandb.teardown()
    rows = []
    for path in sorted((run_dir / "wandb").glob("offline-run-*/*.wandb")):
        for record in wandb_records(path):
            if record.HasField("history"):
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


POINTS = [{"step": 1, "epoch": 1, "time": 0.1, "train/loss": 2.0},
          {"step": 2, "epoch": 1, "time": 0.2, "train/loss": 1.5}]


def test_a_failing_wandb_call_restarts_the_mirror_offline_with_its_history(home, tmp_path, capsys):
    run_dir = tmp_path / "run"
    sink = WandbSink(auto_config(wandb_console=False, wandb_system_metrics=False), run_dir, "failing1",
                     holds_history=False)
    sink.carry(lambda: POINTS, lambda: {"best/grader": 1.0})  # a run new to W&B gets the trace's points first
    first = sink.run

    def broken(*_args, **_kwargs):
        raise OSError("disk full")

    sink.run.log = broken
    sink.log({"step": 3, "epoch": 1, "time": 0.3, "train/loss": 1.0})
    err = capsys.readouterr().err
    assert "W&B log failed (OSError: disk full); continuing with W&B offline, upload later with: wandb sync" in err
    assert sink.run is not None and sink.run is not first and sink.mode == "offline"
    sink.finish()
    steps = [row["trainer/step"] for row in history_points(run_dir) if "train/loss" in row]
    # The first files hold 1-2; the restarted ones 1-2 again (what a failing service lost is unknown), then 3.
    assert steps == [1, 2, 1, 2, 3]


def test_a_failure_that_keeps_coming_back_ends_the_mirror_not_the_run(home, tmp_path, capsys):
    sink = WandbSink(auto_config(wandb_console=False, wandb_system_metrics=False), tmp_path / "run", "failing2")

    def broken(*_args, **_kwargs):
        raise OSError("disk full")

    sink._start = broken  # every fresh start fails too
    sink.run.log = broken
    sink.log({"step": 1, "epoch": 1, "time": 0.1, "train/loss": 1.0})
    err = capsys.readouterr().err
    assert "W&B log failed (OSError: disk full); offline start failed too (OSError: disk full); continuing " \
           "without W&B (the local trace has every point)" in err
    assert sink.run is None and sink.mode == "disabled"
    sink.log({"step": 2, "epoch": 1, "time": 0.2, "train/loss": 1.0})  # later points: nothing to fail
    sink.summary({"best/grader": 1.0})
    sink.interrupted()


def process_state(pid: int) -> str:
    """The state letter of process ``pid`` in /proc ("Z": a zombie), "" once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def wandb_core_pids() -> list[int]:
    """wandb's live service processes started by this process (each in a session of its own; a killed one
    stays a zombie child until wandb's next start reaps it)."""
    import os

    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    return [int(pid) for pid in children
            if Path(f"/proc/{pid}/comm").read_text().strip() == "wandb-core" and os.getsid(int(pid)) != os.getsid(0)
            and process_state(int(pid)) != "Z"]


@pytest.mark.parametrize("noticed", [True, False], ids=["noticed", "learnt-at-finish"])
def test_the_runs_end_is_kept_when_the_stop_signal_also_reaches_wandbs_service(home, tmp_path, capsys, noticed):
    """On a cluster the stop signal reaches every process of the job, wandb-core too, though it runs in its
    own session; it dies at once. The mirror restarts offline and records the end there: the history again,
    preempting, exit 143, and the line to sync it. Whether wandb's client noticed the death before the
    preempting mark (sent without an answer) or learns of it only when the run finishes."""
    import os
    import signal
    import time

    run_dir = tmp_path / "run"
    sink = WandbSink(auto_config(wandb_console=False, wandb_system_metrics=False), run_dir, "stopped1")
    sink.carry(lambda: POINTS[:1], dict)
    (core,) = wandb_core_pids()
    os.kill(core, signal.SIGTERM if noticed else signal.SIGKILL)
    deadline = time.time() + 30
    while noticed and process_state(core) not in ("", "Z"):
        assert time.time() < deadline
        time.sleep(0.1)
    sink.interrupted(exit_code=143)
    err = capsys.readouterr().err
    assert "continuing with W&B offline, upload later with: wandb sync" in err
    import wandb

    wandb.teardown()
    last = sorted((run_dir / "wandb").glob("offline-run-*/*.wandb"))[-1]
    records = wandb_records(last)
    kinds = [r.WhichOneof("record_type") for r in records]
    exits = [r.exit.exit_code for r in records if r.HasField("exit")]
    assert "preempting" in kinds and exits == [143]
    assert [json.loads(i.value_json) for r in records if r.HasField("history") for i in r.history.item
            if (i.key or "/".join(i.nested_key)) == "trainer/step"] == [1]


# ------------------------------------------------------------------------------ W&B down
@pytest.mark.slow
def test_a_logged_in_run_with_wandb_unreachable_falls_back_to_offline_and_finishes(home, tmp_path, cache_dir):
    proxy = RecordingBlackHole()
    try:
        run_dir = tmp_path / "run"
        command = train_command(*tiny_args(wandb_mode="auto", log_dir=run_dir, wandb_init_timeout_s=3,
                                           wandb_finish_timeout_s=10))
        env = outage_environment(home, proxy.url, REPO)
        result = subprocess.run(command, check=False, env=env, cwd=tmp_path, timeout=600, capture_output=True,
                                text=True)
    finally:
        proxy.close()
    output = result.stdout + result.stderr
    (tmp_path / "train.log").write_text(output)
    assert result.returncode == 0, output[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished"
    assert status["wandb_url"] is None  # the W&B run went offline: no page to link to yet

    host = urlsplit(default_base_url()).netloc
    assert proxy.asked_for(host)  # it did try wandb's server
    tried = [line for line in result.stderr.splitlines() if "could not start" in line]
    assert len(tried) == 1, output[-3000:]
    assert tried[0].startswith(f"mtl-train: W&B online (credentials for {default_base_url()} found in "
                               f"{home / '.netrc'}) could not start (")
    assert f"continuing with W&B offline, upload later with: wandb sync {run_dir / 'wandb'}/offline-run-" \
        in tried[0]
    exits = [r.exit.exit_code for r in wandb_records(offline_run_file(run_dir)) if r.HasField("exit")]
    assert exits == [0]

    scanned, findings = scan_for_secrets([run_dir, tmp_path / "train.log"])
    assert findings == []
    assert scanned > 30  # the run's files, W&B's (logs, run files, metadata) and the zips' members
