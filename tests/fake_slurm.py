"""A fake SLURM cluster on this machine: ``sbatch``, ``srun``, ``sacct``, ``scontrol``, ``squeue`` and
``scancel`` as one script, sharing a JSON state file under ``$FAKE_SLURM_DIR``.

``sbatch`` keeps a copy of the script, answers "Submitted batch job N" and starts a detached runner
that really runs it (``bash script``, which calls ``srun ... python -m submitit.core._submit``), task by
task for an array (``--array=0-K%P``: at most P at once), with SLURM's environment variables. While the
file ``$FAKE_SLURM_DIR/hold`` exists, jobs stay PENDING. ``$FAKE_SLURM_TIMEOUT_GLOB`` plays a time limit:
once a path matches it, the runner sends SIGUSR2 to the running job step's process group (as
``--signal=USR2@N`` does), waits for the step to end and, when the job asked ``scontrol requeue`` for
itself, runs the same script again, as SLURM's requeue would ($FAKE_SLURM_TIMEOUTS of them, default 1).
The state records every sbatch call and each task's attempts, for the tests to check.

    fake_slurm.install(bin_dir, state_dir)   # writes the commands to bin_dir (put it first on PATH)
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

COMMANDS = ("sbatch", "srun", "sacct", "scontrol", "squeue", "scancel")
FINISHED = ("COMPLETED", "FAILED", "CANCELLED")


def install(bin_dir: Path, state_dir: Path) -> dict[str, str]:
    """Write the fake commands into ``bin_dir``; the environment variables that put them to use."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    for command in COMMANDS:
        path = bin_dir / command
        path.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(__file__)} {command} \"$@\"\n")
        path.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM_DIR": str(state_dir)}


def read_state(state_dir: Path) -> dict[str, Any]:
    path = Path(state_dir) / "state.json"
    return json.loads(path.read_text()) if path.exists() else {"next_id": 1000, "jobs": {}, "sbatch": []}


def settled_state(state_dir: Path, timeout: float = 60) -> dict[str, Any]:
    """The state once every job has ended. submitit counts a job done when its result file is written, a
    moment before the job script exits and the cluster records the job's end (sacct lags the same way)."""
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(state_dir)
        if all(job["state"] in FINISHED for job in state["jobs"].values()) or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------- processes
def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, session id, start time) of a live process, None once it is gone (or a zombie)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[3]), fields[19]


def process_tree(root: int) -> list[tuple[int, str]]:
    """(pid, start time) of ``root`` and every descendant, whatever their session or process group: what a
    job's cgroup holds (SLURM's proctrack/cgroup signals them all; wandb-core runs in a session of its own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        stat = _stat(pid)
        if stat is not None:
            found.append((pid, stat[2]))
            todo.extend(children.get(pid, []))
    return found


def signal_processes(processes: list[tuple[int, str]], signum: int) -> list[int]:
    """Send ``signum`` to each (pid, start time) still alive as that same process; the pids signalled."""
    sent = []
    for pid, started in processes:
        stat = _stat(pid)
        if stat is not None and stat[2] == started:
            try:
                os.kill(pid, signum)
                sent.append(pid)
            except ProcessLookupError:
                pass
    return sent


def session_of(pid: int) -> int | None:
    stat = _stat(pid)
    return stat[1] if stat is not None else None


# ---------------------------------------------------------------------------------------------- state
def _dir() -> Path:
    return Path(os.environ["FAKE_SLURM_DIR"])


@contextmanager
def _state() -> Iterator[dict[str, Any]]:
    """The state, locked for a read-modify-write."""
    with open(_dir() / "state.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = read_state(_dir())
        yield state
        tmp = _dir() / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, _dir() / "state.json")


def _expand(path: str, job: dict[str, Any]) -> str:
    return (path.replace("%A", job["array_id"]).replace("%a", str(job["task"]))
            .replace("%j", job["slurm_job_id"]).replace("%t", "0"))


# ---------------------------------------------------------------------------------------------- sbatch
def sbatch(args: list[str]) -> int:
    script = Path(args[-1]).read_text()
    options = dict(re.findall(r"^#SBATCH --([\w-]+)=?(.*)$", script, flags=re.M))
    with _state() as state:
        number = state["next_id"]
        state["next_id"] += 1
        copy = _dir() / f"job-{number}.sh"
        copy.write_text(script)
        array = options.get("array")
        tasks, parallelism = [None], 1
        if array:
            match = re.fullmatch(r"0-(\d+)(?:%(\d+))?", array)
            tasks = list(range(int(match[1]) + 1))
            parallelism = int(match[2] or len(tasks))
        for task in tasks:
            key = f"{number}" if task is None else f"{number}_{task}"
            state["jobs"][key] = {"state": "PENDING", "array_id": str(number), "task": task, "script": str(copy),
                                  "slurm_job_id": str(number if task is None else number + 100 * (task + 1)),
                                  "output": options.get("output", "slurm-%j.out"), "attempts": [],
                                  "requeue": False, "cancelled": False}
        state["sbatch"].append({"job_id": number, "array": array, "job_name": options.get("job-name"),
                                "tasks": len(tasks), "parallelism": parallelism, "options": options})
    subprocess.Popen([sys.executable, __file__, "_runner", str(number), str(parallelism)],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
    print(f"Submitted batch job {number}")
    return 0


def _take_timeout() -> bool:
    with _state() as state:
        left = state.setdefault("timeouts_left", int(os.environ.get("FAKE_SLURM_TIMEOUTS", "1")))
        if left <= 0:
            return False
        state["timeouts_left"] = left - 1
        return True


def _run_task(key: str) -> None:
    """Run one job (or array task) until it ends without asking to be requeued."""
    while True:
        while (_dir() / "hold").exists():
            time.sleep(0.2)
        with _state() as state:
            job = state["jobs"][key]
            if job["cancelled"]:
                return
            job["state"] = "RUNNING"
            job["attempts"].append({"start": time.time()})
            job = dict(job)
        env = {**os.environ, "SLURM_JOB_ID": job["slurm_job_id"], "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
               "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1",
               "SLURM_JOB_NODELIST": "fakenode", "FAKE_SLURM_KEY": key}
        if job["task"] is not None:
            env.update(SLURM_ARRAY_JOB_ID=job["array_id"], SLURM_ARRAY_TASK_ID=str(job["task"]))
        with open(_expand(job["output"], job), "a") as out:
            process = subprocess.Popen(["bash", job["script"]], env=env, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        timed_out = False
        pattern = os.environ.get("FAKE_SLURM_TIMEOUT_GLOB")
        while process.poll() is None:
            if pattern and not timed_out and glob.glob(pattern) and _take_timeout():
                timed_out = True
                step = _dir() / f"step-{key}"
                try:  # --signal=USR2@N reaches every process of the job step
                    os.killpg(int(step.read_text()), signal.SIGUSR2)
                except (FileNotFoundError, ProcessLookupError):
                    timed_out = False
            time.sleep(0.2)
        with _state() as state:
            job = state["jobs"][key]
            job["attempts"][-1].update(end=time.time(), exit=process.returncode, timed_out=timed_out)
            if job["requeue"] and not job["cancelled"]:
                job["requeue"], job["state"] = False, "PENDING"
                continue
            job["state"] = ("CANCELLED" if job["cancelled"] else "COMPLETED" if process.returncode == 0
                            else "FAILED")
            return


def runner(number: str, parallelism: str) -> int:
    keys = sorted((k for k, j in read_state(_dir())["jobs"].items() if j["array_id"] == number),
                  key=lambda k: read_state(_dir())["jobs"][k]["task"] or 0)
    slots = threading.Semaphore(int(parallelism))

    def one(key: str) -> None:
        with slots:
            _run_task(key)

    threads = [threading.Thread(target=one, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
        time.sleep(0.05)  # array tasks start in index order
    for thread in threads:
        thread.join()
    return 0


# ---------------------------------------------------------------------------------------------- srun
def srun(args: list[str]) -> int:
    """A job step: its own process group (recorded for the time-limit signal), output to --output/--error."""
    key = os.environ["FAKE_SLURM_KEY"]
    job = read_state(_dir())["jobs"][key]
    files: dict[str, str] = {}
    while args and args[0].startswith("--"):
        option = args.pop(0)
        if option in ("--output", "--error"):
            files[option] = _expand(args.pop(0), job)
    os.setpgid(0, 0)
    (_dir() / f"step-{key}").write_text(str(os.getpid()))
    for option, fd in (("--output", 1), ("--error", 2)):
        if option in files:
            target = os.open(files[option], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(target, fd)
    os.execvp(args[0], args)
    return 127


# ---------------------------------------------------------------------------------------------- queries
def sacct(args: list[str]) -> int:
    wanted = {args[i + 1] for i, a in enumerate(args) if a == "-j"}
    print("JobID|State|NodeList")
    for key, job in read_state(_dir())["jobs"].items():
        if job["array_id"] in wanted or key in wanted:
            print(f"{key}|{job['state']}|fakenode")
    return 0


def squeue(args: list[str]) -> int:
    print("JOBID STATE")
    for key, job in read_state(_dir())["jobs"].items():
        if job["state"] not in FINISHED:
            print(f"{key} {job['state']}")
    return 0


def scontrol(args: list[str]) -> int:
    if len(args) != 2 or args[0] != "requeue":
        print(f"fake scontrol: only 'scontrol requeue JOBID' is played, got {args}", file=sys.stderr)
        return 1
    with _state() as state:
        if args[1] not in state["jobs"]:
            print(f"scontrol: error: Invalid job id specified: {args[1]}", file=sys.stderr)
            return 1
        state["jobs"][args[1]]["requeue"] = True
    return 0


def scancel(args: list[str]) -> int:
    signum = signal.SIGTERM
    if "--signal" in args:
        signum = getattr(signal, args[args.index("--signal") + 1])
    ids = [a for a in args if not a.startswith("-") and not a.startswith("SIG")]
    with _state() as state:
        for key, job in state["jobs"].items():
            if key in ids or job["array_id"] in ids:
                if "--signal" not in args:
                    job["cancelled"] = True
                    if job["state"] == "PENDING":
                        job["state"] = "CANCELLED"
                step = _dir() / f"step-{key}"
                if job["state"] == "RUNNING" and step.exists():
                    os.killpg(int(step.read_text()), signum)
    return 0


if __name__ == "__main__":
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "_runner":
        sys.exit(runner(*rest))
    sys.exit({"sbatch": sbatch, "srun": srun, "sacct": sacct, "squeue": squeue, "scontrol": scontrol,
              "scancel": scancel}[command](rest))
