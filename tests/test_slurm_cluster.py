"""``mtl-ablate run --backend slurm`` against a fake cluster (tests/fake_slurm.py) that really runs the
jobs: one capped job array per entry, a task timed out and requeued that resumes and finishes, job ids
recorded in the run directories, and a second ``run`` that submits nothing new -- also while the
first one's job is still queued. Plus the sbatch script and the SLURM options, without a cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import fake_slurm
from mtl.ablate.entry import load_entries
from mtl.ablate.planner import plan
from mtl.ablate.slurm import read_slurm_jobs
from mtl.run.records import read_record
from mtl.suite import main
from support import SUITE_PROFILE, tiny_ablations
from support import write_tiny_entry as write_entry

PROFILE = SUITE_PROFILE
SLURM_FLAGS = ["--backend", "slurm", "--slurm-gpus", "0", "--slurm-cpus", "1", "--slurm-timeout-min", "10",
               "--slurm-signal-delay-s", "60"]


@pytest.fixture
def ablations(tmp_path, cache_dir) -> Path:
    return tiny_ablations(tmp_path / "ablations")


def ablate(args: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mtl.suite", *args], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


@pytest.mark.slow
def test_array_with_a_cap_a_timed_out_task_requeued_and_a_second_run_submitting_nothing(ablations, tmp_path):
    runs_dir, state_dir = tmp_path / "runs", tmp_path / "slurm"
    env = fake_slurm.install(tmp_path / "bin", state_dir)
    # The time limit strikes once, as soon as a run has checkpointed its first step.
    env["FAKE_SLURM_TIMEOUT_GLOB"] = str(runs_dir / "problem1.cluster" / "*" / "checkpoints" / "last.pt")
    write_entry(ablations, "problem1.cluster", overrides={"checkpoint_interval_steps": 1},
                grid={"optimizer_lr": [0.01, 0.02]})
    args = ["run", "problem1.cluster", "--ablations-dir", str(ablations), "--runs-dir", str(runs_dir),
            *SLURM_FLAGS, "--slurm-array-parallelism", "1"]
    code, output = finish(ablate(args, env))
    assert code == 0, output

    state = fake_slurm.settled_state(state_dir)
    (call,) = state["sbatch"]
    assert call["array"] == "0-1%1" and call["job_name"] == "mtl:problem1.cluster"
    assert "gpus-per-node" not in call["options"] and call["options"]["signal"] == "USR2@60"
    assert "wckey" not in call["options"] and call["options"]["requeue"] == ""  # what submitit submitted
    tasks = [state["jobs"][f"{call['job_id']}_{i}"] for i in range(2)]
    assert [t["state"] for t in tasks] == ["COMPLETED", "COMPLETED"]
    attempts = sorted((a["start"], a["end"]) for t in tasks for a in t["attempts"])
    assert all(end <= next_start for (_, end), (next_start, _) in zip(attempts, attempts[1:])), "cap of 1 broken"
    timed_out = [t for t in tasks if t["attempts"][0]["timed_out"]]
    assert len(timed_out) == 1 and len(timed_out[0]["attempts"]) == 2  # requeued once, then finished

    runs = plan(load_entries(ablations)["problem1.cluster"], None, runs_dir)
    for index, run in enumerate(runs):
        record = read_record(run.run_dir)
        assert record.state == "finished"
        assert [r.job_id for r in read_slurm_jobs(run.run_dir)] == [f"{call['job_id']}_{index}"]
    requeued = runs[tasks.index(timed_out[0])]
    log = (requeued.run_dir.parent / ".logs" / f"{requeued.name}.log").read_text()
    assert "stopped by SIGUSR2 (time limit)" in log and "requeued" in log
    assert read_record(requeued.run_dir).points[-1]["step"] == 4  # resumed, not restarted: the trace is whole

    code, output = finish(ablate(args, env))
    assert code == 0, output
    assert len(fake_slurm.read_state(state_dir)["sbatch"]) == 1


@pytest.mark.slow
def test_a_second_run_follows_a_queued_job_instead_of_submitting_it_again(ablations, tmp_path):
    runs_dir, state_dir = tmp_path / "runs", tmp_path / "slurm"
    env = fake_slurm.install(tmp_path / "bin", state_dir)
    write_entry(ablations, "problem1.queued")
    (run,) = plan(load_entries(ablations)["problem1.queued"], None, runs_dir)
    args = ["run", "problem1.queued", "--ablations-dir", str(ablations), "--runs-dir", str(runs_dir), *SLURM_FLAGS]
    (state_dir / "hold").write_text("")  # the cluster is busy: the job stays PENDING
    first = ablate(args, env, start_new_session=True)
    deadline = time.time() + 120
    while not read_slurm_jobs(run.run_dir):
        assert first.poll() is None and time.time() < deadline, first.communicate()[0]
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the login shell died
    first.wait()

    second = ablate(args, env)
    time.sleep(3)
    (state_dir / "hold").unlink()  # the queued job starts
    code, output = finish(second)
    assert code == 0, output
    state = fake_slurm.read_state(state_dir)
    assert len(state["sbatch"]) == 1 and state["sbatch"][0]["job_name"] == f"mtl:problem1.queued:{run.name}"
    assert read_record(run.run_dir).state == "finished"
    assert len(read_slurm_jobs(run.run_dir)) == 1


def test_dry_run_prints_the_sbatch_script_from_flags_and_the_profile(ablations, tmp_path, capsys):
    profile = {**PROFILE, "slurm": {"partition": "gpu", "account": "vision", "setup": ["module load cuda"],
                                    "additional_parameters": {"mail-type": "END"}, "mem_gb": 32}}
    (ablations / "profiles" / "cluster.yaml").write_text(yaml.safe_dump(profile))
    write_entry(ablations, "problem1.dry", grid={"optimizer_lr": [0.01, 0.02, 0.03]})
    args = ["run", "problem1.dry", "--ablations-dir", str(ablations), "--runs-dir", str(tmp_path / "runs"),
            "--backend", "slurm", "--dry-run", "--profile", "cluster", "--slurm-array-parallelism", "2",
            "--slurm-qos", "high"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --partition=gpu", "#SBATCH --account=vision",
                 "#SBATCH --qos=high", "#SBATCH --mem=32GB", "#SBATCH --gpus-per-node=1", "#SBATCH --mail-type=END",
                 "#SBATCH --job-name=mtl:problem1.dry", "#SBATCH --signal=USR2@180", "module load cuda",
                 "-m submitit.core._submit"):
        assert line in out, line
    assert not list((tmp_path / "runs").glob("**/*.jsonl"))  # nothing submitted, nothing recorded

    assert "#SBATCH --requeue" in out  # a cluster that requeues preempted jobs may requeue ours
    assert "wckey" not in out  # clusters that enforce wckeys reject submitit's default one

    assert main([*args, "--slurm-gpus", "0", "--slurm-wckey", "vision-2025", "--slurm-no-requeue"]) == 0
    out = capsys.readouterr().out
    assert "gpus-per-node" not in out  # a CPU job asks for no GPU
    assert "#SBATCH --wckey=vision-2025" in out and "--requeue" not in out


def test_bad_slurm_options_are_named(ablations, tmp_path, capsys):
    (ablations / "profiles" / "typo.yaml").write_text(yaml.safe_dump({**PROFILE, "slurm": {"partiton": "gpu"}}))
    write_entry(ablations, "problem1.bad")
    base = ["run", "problem1.bad", "--ablations-dir", str(ablations), "--runs-dir", str(tmp_path / "runs"),
            "--backend", "slurm", "--dry-run"]
    assert main([*base, "--profile", "typo"]) == 2
    err = capsys.readouterr().err
    assert "typo.yaml: slurm: unknown SLURM option(s) partiton" in err
    assert main([*base, "--slurm-additional", "novalue"]) == 2
    assert "--slurm-additional 'novalue': expected KEY=VALUE" in capsys.readouterr().err
    assert main([*base, "--slurm-timeout-min", "2"]) == 2  # the 180 s signal lead needs a longer limit
    assert "signal_delay_s 180" in capsys.readouterr().err
    assert json.loads(json.dumps(main([*base, "--slurm-profile", "tiny"]))) == 2  # a profile without a section
    assert "no 'slurm:' section" in capsys.readouterr().err


def test_a_job_requeues_a_stopped_or_finished_run_only(tmp_path):
    """On SLURM's signal the job is requeued when its trainer stopped with a checkpoint (143) or finished;
    a trainer that failed is not retried by the cluster (its status says why)."""
    from submitit.helpers import DelayedSubmission

    from mtl.ablate.slurm import TrainingJob

    for code, requeued in ((143, True), (0, True), (1, False), (3, False)):
        job = TrainingJob([sys.executable, "-c", f"raise SystemExit({code})"], {}, str(tmp_path / "log"), 5)
        assert job() == code
        again = job.checkpoint()
        assert isinstance(again, DelayedSubmission) if requeued else again is None
        if requeued:
            assert again.function is job
    assert "not requeued" in (tmp_path / "log").read_text()
