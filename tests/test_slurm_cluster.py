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
from types import SimpleNamespace

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
# The fake cluster answers at once: `run` asks it for its jobs' states every second (a real one: every 15 s).
SLURM_FLAGS = ["--backend", "slurm", "--slurm-gpus", "0", "--slurm-cpus", "1", "--slurm-timeout-min", "10",
               "--slurm-signal-delay-s", "60", "--slurm-poll-s", "1"]


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
    """(On a cluster without accounting storage squeue answers instead of sacct, and the same job is followed:
    test_without_accounting_the_controller_answers_and_an_unanswered_job_is_not_resubmitted.)"""
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
    time.sleep(1.5)
    (state_dir / "hold").unlink()  # the queued job starts
    code, output = finish(second)
    assert code == 0, output
    state = fake_slurm.read_state(state_dir)
    assert len(state["sbatch"]) == 1 and state["sbatch"][0]["job_name"] == f"mtl:problem1.queued:{run.name}"
    assert read_record(run.run_dir).state == "finished"
    assert len(read_slurm_jobs(run.run_dir)) == 1


def wait_for_running_epoch(run_dir: Path, process: subprocess.Popen, epoch: int = 1, timeout: float = 300) -> None:
    """Until the run, training, has checkpointed ``epoch``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            status = json.loads((run_dir / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            status = {}
        if status.get("state") == "running" and status.get("epoch", 0) >= epoch and (run_dir / "checkpoints"
                                                                                  / "last.pt").exists():
            return
        assert process.poll() is None, process.communicate()[0]
        time.sleep(0.2)
    pytest.fail(f"{run_dir.name} never checkpointed epoch {epoch}")


def start_on_the_cluster(ablations: Path, runs_dir: Path, entry_id: str, env: dict[str, str],
                         profile: dict | None = None) -> tuple:
    """Write the tiny profile (3 epochs, a checkpoint every step, and ``profile``) and the entry, start
    `mtl-ablate run` on the fake cluster and wait until its one run has checkpointed epoch 1 while running:
    (run spec, the command's arguments, the process, the run's job)."""
    (ablations / "profiles" / "tiny.yaml").write_text(yaml.safe_dump({
        **PROFILE, "num_epochs": 3, "checkpoint_interval_steps": 1, **(profile or {})}))
    write_entry(ablations, entry_id)
    (run,) = plan(load_entries(ablations)[entry_id], None, runs_dir)
    args = ["run", entry_id, "--ablations-dir", str(ablations), "--runs-dir", str(runs_dir), *SLURM_FLAGS]
    process = ablate(args, env)
    wait_for_running_epoch(run.run_dir, process)
    (job,) = read_slurm_jobs(run.run_dir)
    return run, args, process, job


def offline_wandb_env(home: Path) -> dict[str, str]:
    """W&B offline with a well-formed fake key and a server address that answers nothing."""
    return {"HOME": str(home), "WANDB_CONFIG_DIR": str(home / "wandb-config"), "WANDB_MODE": "offline",
            "WANDB_API_KEY": "f" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_SILENT": "true"}


@pytest.mark.slow
def test_a_preempted_job_ends_interrupted_and_the_cluster_requeues_it(ablations, tmp_path):
    """PreemptMode=REQUEUE: SIGTERM to every process of the job, wandb's service in its own session too. The
    trainer checkpoints and ends interrupted, W&B keeps the run's end (offline, under a fresh service), the
    cluster runs the job again, and the run resumes and finishes; `run` follows it to the end, one sbatch."""
    from wandb_records import offline_runs

    runs_dir, state_dir = tmp_path / "runs", tmp_path / "slurm"
    env = {**fake_slurm.install(tmp_path / "bin", state_dir), **offline_wandb_env(tmp_path / "home"),
           "FAKE_SLURM_PREEMPT_MODE": "REQUEUE", "FAKE_SLURM_KILL_WAIT": "60"}
    run, _, process, job = start_on_the_cluster(ablations, runs_dir, "problem1.preempted", env, {
        "wandb_mode": "auto", "wandb_system_metrics": False, "wandb_console": False})
    fake_slurm.stop(state_dir, job.job_id, "PREEMPTED")
    code, output = finish(process)
    assert code == 0, output

    state = fake_slurm.settled_state(state_dir)
    assert len(state["sbatch"]) == 1
    task = state["jobs"][job.job_id]
    assert task["state"] == "COMPLETED" and [a["stopped"] for a in task["attempts"]] == ["PREEMPTED", None]
    (sent,) = task["attempts"][0]["signals"]
    assert sent["signal"] == "SIGTERM" and len({p["session"] for p in sent["processes"]}) >= 2  # wandb-core too
    assert read_record(run.run_dir).state == "finished"
    log = (run.run_dir.parent / ".logs" / f"{run.name}.log").read_text()
    assert "stopped by SIGTERM" in log and "the job ends without a result" in log and "resuming from step" in log
    assert "continuing with W&B offline, upload later with: wandb sync" in log  # its service died with the job
    (wandb_run,) = offline_runs(run.run_dir).values()  # one W&B run: the requeued job resumed it
    assert wandb_run.preempting is False and wandb_run.state == "finished"
    assert 143 in wandb_run.exit_codes and wandb_run.exit_codes[-1] == 0
    preempted = [f for f in wandb_run.files if "preempting" in {r.WhichOneof("record_type") for r in _records(f)}]
    assert preempted, "no file records the preempted end"


def _records(path: Path) -> list:
    from wandb_records import read_records

    return read_records(path)


@pytest.mark.slow
def test_a_cancelled_job_ends_interrupted_and_the_next_run_resumes_it(ablations, tmp_path):
    """scancel: SIGTERM to the job's processes, the trainer checkpoints, the job ends CANCELLED without a
    result. `run` reports the run interrupted; the next `run` sees the job ended and submits it again, and the
    run resumes from its checkpoint. (The time limit ends a job the same way, SIGTERM then TIMEOUT: an ended
    state as CANCELLED is, test_sacct_prints_as_slurm_does_and_the_states_decide_what_is_followed, and a job
    ended without a result stands for the run's records, test_a_job_slurm_ended_without_a_result_stands_for_
    the_runs_records.)"""
    runs_dir, state_dir = tmp_path / "runs", tmp_path / "slurm"
    env = fake_slurm.install(tmp_path / "bin", state_dir)
    run, args, process, job = start_on_the_cluster(ablations, runs_dir, "problem1.stopped", env)
    subprocess.run(["scancel", job.job_id], env={**os.environ, **env}, check=True)
    code, output = finish(process)
    assert code == 1 and "interrupted" in output, output
    record = read_record(run.run_dir)
    assert record.state == "interrupted" and (run.run_dir / "checkpoints" / "last.pt").exists()
    assert fake_slurm.settled_state(state_dir)["jobs"][job.job_id]["state"] == "CANCELLED"

    code, output = finish(ablate(args, env))
    assert code == 0, output
    assert len(fake_slurm.read_state(state_dir)["sbatch"]) == 2  # the ended job was submitted again
    assert read_record(run.run_dir).state == "finished"
    assert "resuming from step" in (run.run_dir.parent / ".logs" / f"{run.name}.log").read_text()


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
    assert main([*base, "--slurm-poll-s", "0"]) == 2
    assert "--slurm-* flags: poll_s must be a number of seconds, at least 0.5, got 0.0" in capsys.readouterr().err
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


# ------------------------------------------------------------------------------------------ job states
def plant_jobs(state_dir: Path, jobs: dict[str, str], ended_ago: float = 0.0) -> None:
    """The fake cluster's record of jobs in the given states, as if they had run (no process is started)."""
    state = fake_slurm.read_state(state_dir)
    for key, job_state in jobs.items():
        number, _, task = key.partition("_")
        started = job_state not in ("PENDING",)
        state["jobs"][key] = {"state": job_state, "array_id": number, "task": int(task) if task else None,
                              "script": "", "slurm_job_id": number, "output": "", "attempts": [{}] if started else [],
                              "requeue": False, "cancelled": job_state == "CANCELLED", "requeueable": True,
                              "parallelism": 2, "step_state": job_state if started else None,
                              "ended_at": time.time() - ended_ago if job_state in fake_slurm.FINISHED else None}
    (state_dir / "state.json").write_text(json.dumps(state))


def sacct_lines(env: dict[str, str], job: str) -> list[str]:
    result = subprocess.run(["sacct", "-o", "JobID,State,NodeList", "--parsable2", "-j", job],
                            env={**os.environ, **env}, capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


def test_sacct_prints_as_slurm_does_and_the_states_decide_what_is_followed(tmp_path, monkeypatch):
    """Array ranges of tasks not started, .batch/.extern/.0 steps, CANCELLED by <uid>, the end states of a job
    SLURM stopped: read by submitit's parser, a live job is followed and an ended one is not."""
    from mtl.ablate.slurm import ENDED_STATES, LIVE_STATES, SlurmStates

    state_dir = tmp_path / "slurm"
    env = fake_slurm.install(tmp_path / "bin", state_dir)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ends = ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"]
    plant_jobs(state_dir, {"500_0": "RUNNING", "500_1": "REQUEUED", "500_2": "PENDING", "500_3": "PENDING",
                           **{f"600_{i}": state for i, state in enumerate(ends)}})
    lines = sacct_lines(env, "500")
    assert lines[:2] == ["JobID|State|NodeList", "500_[2-3%2]|PENDING|None assigned"]
    assert "500_0.batch|RUNNING|fakenode" in lines and "500_0.extern|RUNNING|fakenode" in lines
    cancelled = sacct_lines(env, "600")
    assert f"600_2|CANCELLED by {os.getuid()}|fakenode" in cancelled and "600_4.batch|NODE_FAIL|fakenode" in cancelled

    states = SlurmStates()
    assert [states.state(f"500_{i}") for i in range(4)] == ["RUNNING", "REQUEUED", "PENDING", "PENDING"]
    assert [states.state(f"600_{i}") for i in range(len(ends))] == ends
    assert all(s in LIVE_STATES for s in ("RUNNING", "REQUEUED", "PENDING"))
    assert set(ends) <= set(ENDED_STATES) and "PREEMPTED" not in LIVE_STATES


def test_without_accounting_the_controller_answers_and_an_unanswered_job_is_not_resubmitted(tmp_path, monkeypatch):
    """sacct fails (no accounting storage): squeue says a job is pending or still known as ended, or no longer
    knows it (ended a while ago). When neither answers, `run` refuses to submit the run again."""
    from mtl.ablate.slurm import (
        SlurmJobRecord,
        SlurmOptions,
        SlurmStates,
        SlurmStateUnknown,
        SubmititBackend,
        record_slurm_job,
    )

    state_dir = tmp_path / "slurm"
    env = fake_slurm.install(tmp_path / "bin", state_dir)
    for name, value in {**env, "FAKE_SLURM_NO_ACCOUNTING": "1"}.items():
        monkeypatch.setenv(name, value)
    plant_jobs(state_dir, {"700_0": "PENDING", "700_1": "PENDING", "701": "CANCELLED"})
    plant_jobs(state_dir, {"702": "COMPLETED"}, ended_ago=3600)
    result = subprocess.run(["sacct", "-j", "700"], capture_output=True, text=True)
    assert result.returncode == 1 and "accounting storage is disabled" in result.stderr
    states = SlurmStates()
    assert (states.state("700_1"), states.state("701"), states.state("702")) == ("PENDING", "CANCELLED", "ENDED")
    assert "sacct: exit 1, sacct: error: Slurm accounting storage is disabled" in states.why_unknown("700_1")

    backend = SubmititBackend(tmp_path / "submitit", SlurmOptions())
    for job_id in ("700_1", "701", "702"):
        record_slurm_job(tmp_path / job_id, SlurmJobRecord(job_id, str(tmp_path / "submitit")))
    assert backend.adopt(tmp_path / "700_1") is not None  # still queued: followed
    assert backend.adopt(tmp_path / "701") is None and backend.adopt(tmp_path / "702") is None  # ended
    monkeypatch.setenv("FAKE_SLURM_CONTROLLER_DOWN", "1")
    with pytest.raises(SlurmStateUnknown, match=r"cannot tell whether job 700_1 .* not submitting it again"):
        backend.adopt(tmp_path / "700_1")


@pytest.mark.parametrize("recorded, code", [("interrupted", 143), ("finished", 0), ("running", 1)])
def test_a_job_slurm_ended_without_a_result_stands_for_the_runs_records(tmp_path, monkeypatch, recorded, code):
    """Preempted, cancelled, timed out or out of memory, a job leaves no result: the run's status says whether
    it stopped with a checkpoint (interrupted), finished, or was killed where it stood (a failure naming the
    state; the next run resumes it from its last checkpoint)."""
    from mtl.ablate.slurm import SlurmStates, SubmititJob

    state_dir = tmp_path / "slurm"
    env = fake_slurm.install(tmp_path / "bin", state_dir)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    plant_jobs(state_dir, {"800_0": "OUT_OF_MEMORY"})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "status.json").write_text(json.dumps({"state": recorded, "pid": 2 ** 22 + 1, "host": "elsewhere"}))

    class NoResult:  # what submitit's job says of a job that wrote none: not done yet by its own account
        job_id = "800_0"
        paths = SimpleNamespace(result_pickle=tmp_path / "800_0_result.pkl")

        def done(self) -> bool:
            return False

        def result(self):
            raise RuntimeError("Job 800_0 (task: 0) has not produced any output (state: OUT_OF_MEMORY)")

    job = SubmititJob(NoResult(), run_dir=run_dir, states=SlurmStates(), result_grace_s=0)
    assert job.poll() == code
    if code == 1:
        assert job.error.startswith("SLURM ended job 800_0 OUT_OF_MEMORY: Job 800_0")


def test_an_ended_job_whose_result_file_is_late_is_waited_for_without_blocking_the_scheduler(tmp_path, monkeypatch):
    """SLURM says the job completed, its result file is not there yet (a shared filesystem): poll answers
    'still running' at once, and reads the result when the file appears."""
    from mtl.ablate.slurm import SlurmStates, SubmititJob

    env = fake_slurm.install(tmp_path / "bin", tmp_path / "slurm")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    plant_jobs(tmp_path / "slurm", {"801_0": "COMPLETED"})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "status.json").write_text(json.dumps({"state": "finished", "pid": 2 ** 22 + 1, "host": "elsewhere"}))
    result = tmp_path / "801_0_result.pkl"

    class LateResult:
        job_id = "801_0"

        def __init__(self):
            self.paths = SimpleNamespace(result_pickle=result)

        def done(self) -> bool:
            return result.exists()

        def result(self) -> int:
            assert self._results_timeout_s == 0  # submitit's blocking wait is not used
            return 0 if result.exists() else 1

    job = SubmititJob(LateResult(), run_dir=run_dir, states=SlurmStates(), result_grace_s=3600)
    assert job.poll() is None and job.poll() is None
    result.write_bytes(b"")
    assert job.poll() == 0


def test_sigterm_ends_the_job_without_a_result(tmp_path):
    """submitit only logs SIGTERM; the job forwards it to the trainer and then ends without a result (no
    Exception, so submitit writes none), for the cluster's state of the job to say what follows."""
    import threading

    from mtl.ablate.slurm import TrainingJob

    trainer = ("import signal, sys, time\n"
               "signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))\n"
               "open(sys.argv[1], 'w').close()\n"
               "time.sleep(60)\n")
    started = tmp_path / "started"
    job = TrainingJob([sys.executable, "-c", trainer, str(started)], {}, str(tmp_path / "log"), 5)

    def preempt():
        while not started.exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=preempt, daemon=True).start()
    with pytest.raises(SystemExit) as ended:
        job()
    assert ended.value.code == 143 and not isinstance(ended.value, Exception)
    assert "the job ends without a result" in (tmp_path / "log").read_text()
