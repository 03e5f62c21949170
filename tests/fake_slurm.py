"""A fake SLURM cluster on this machine: ``sbatch``, ``srun``, ``sacct``, ``scontrol``, ``squeue`` and
``scancel`` as one script, sharing a JSON state file under ``$FAKE_SLURM_DIR``.

``sbatch`` keeps a copy of the script, answers "Submitted batch job N" and starts a detached runner
that really runs it (``bash script``, which calls ``srun ... python -m submitit.core._submit``), task by
task for an array (``--array=0-K%P``: at most P at once), with SLURM's environment variables. While the
file ``$FAKE_SLURM_DIR/hold`` exists, jobs stay PENDING.

As SLURM with proctrack/cgroup, a job is every process it started, whatever their session (wandb's
service runs in one of its own): the runner keeps track of them all, and stopping a job signals them all.

- ``$FAKE_SLURM_TIMEOUT_GLOB`` plays a time-limit warning: once a path matches it, the job step's processes
  get SIGUSR2 (as ``--signal=USR2@N``); a job that asked ``scontrol requeue`` for itself runs again when it
  ends ($FAKE_SLURM_TIMEOUTS of them, default 1).
- ``scancel ID`` (or :func:`stop` with CANCELLED), :func:`stop` with PREEMPTED or TIMEOUT: SIGCONT and SIGTERM
  to every process of the job, SIGKILL to what is left after ``$FAKE_SLURM_KILL_WAIT`` seconds (KillWait,
  default 30): the job ends when all its processes have ended (the batch shell dies of SIGTERM at once, the
  step it started may still be checkpointing) or KillWait is over. A job whose batch script ended by itself
  takes what it left behind with it (SIGKILL). A preempted job is requeued when
  ``$FAKE_SLURM_PREEMPT_MODE`` is REQUEUE (the default; CANCEL ends it PREEMPTED) and the job is requeueable
  (``--requeue``, or the cluster's JobRequeue=1 default, ``$FAKE_SLURM_JOB_REQUEUE``, unless
  ``--no-requeue``). NODE_FAIL and OUT_OF_MEMORY kill the job at once (SIGKILL); a requeueable job is
  requeued after a node failure.
- ``sacct`` prints what SLURM prints: array tasks not started yet as one range (``123_[2-3%1]``), and for
  each job that ran its ``.batch``, ``.extern`` and ``.0`` steps, cancelled jobs as ``CANCELLED by <uid>``.
  With ``$FAKE_SLURM_NO_ACCOUNTING`` it fails as on a cluster without accounting storage; ``squeue`` still
  answers from the controller, which forgets an ended job ``$FAKE_SLURM_MIN_JOB_AGE`` seconds after its end
  (default 300). With ``$FAKE_SLURM_CONTROLLER_DOWN`` squeue fails too.

The state records every sbatch call and each task's attempts (with the processes each stop signalled),
for the tests to check.

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
FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED")
STOPS = ("CANCELLED", "PREEMPTED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


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


def stop(state_dir: Path, key: str, how: str) -> None:
    """Ask the cluster to end job ``key`` (``123`` or ``123_4``) as ``how``: CANCELLED (scancel), PREEMPTED,
    TIMEOUT (the time limit itself), NODE_FAIL or OUT_OF_MEMORY; the runner carries it out."""
    assert how in STOPS, how
    (Path(state_dir) / f"stop-{key}").write_text(how)


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
    return _descendants([root])


def _descendants(roots: list[int]) -> list[tuple[int, str]]:
    """(pid, start time) of each live process of ``roots`` and of all their descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry.name))
    found, seen, todo = [], set(), list(roots)
    while todo:
        pid = todo.pop()
        stat = _stat(pid)
        if pid not in seen and stat is not None:
            seen.add(pid)
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
    requeueable = "requeue" in options or (os.environ.get("FAKE_SLURM_JOB_REQUEUE", "1") == "1"
                                           and "no-requeue" not in options)
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
                                  "requeue": False, "cancelled": False, "requeueable": requeueable,
                                  "parallelism": parallelism, "ended_at": None, "step_state": None}
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


class JobProcesses:
    """Every process a running job started (its cgroup): looked for again each time it is asked, from the
    job's first process and from every one found before, so a process whose parent died (reparented to
    init) is still the job's, and so are the processes it starts."""

    def __init__(self, root: int):
        self.root, self.known = root, dict(process_tree(root))

    def refresh(self) -> list[tuple[int, str]]:
        self.known.update(_descendants(self.alive_pids()))
        return list(self.known.items())

    def alive_pids(self) -> list[int]:
        """The known processes still alive as themselves (a pid reused since is not the job's)."""
        return [pid for pid, started in self.known.items() if (_stat(pid) or (0, 0, ""))[2] == started]

    def signal(self, signum: int) -> list[int]:
        return signal_processes(self.refresh(), signum)


def _stop_request(key: str) -> str | None:
    path = _dir() / f"stop-{key}"
    if not path.exists():
        return None
    how = path.read_text().strip()
    path.unlink()
    return how


def _run_attempt(key: str, job: dict[str, Any]) -> dict[str, Any]:
    """Run the job's script once: its exit code, whether the time-limit warning came, how the cluster
    stopped it (None: it ended by itself) and the signals that stop sent to which processes."""
    env = {**os.environ, "SLURM_JOB_ID": job["slurm_job_id"], "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
           "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1",
           "SLURM_JOB_NODELIST": "fakenode", "FAKE_SLURM_KEY": key}
    if job["task"] is not None:
        env.update(SLURM_ARRAY_JOB_ID=job["array_id"], SLURM_ARRAY_TASK_ID=str(job["task"]))
    with open(_expand(job["output"], job), "a") as out:
        process = subprocess.Popen(["bash", job["script"]], env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    processes = JobProcesses(process.pid)
    stopped, kill_at, warned, sent = None, None, False, []
    kill_wait = float(os.environ.get("FAKE_SLURM_KILL_WAIT", "30"))
    pattern = os.environ.get("FAKE_SLURM_TIMEOUT_GLOB")
    # A stopped job ends when all its processes have (the batch shell dies of SIGTERM at once; the job step
    # it started still checkpoints) or when KillWait is over, as slurmd waits for every step of the job.
    while process.poll() is None or (kill_at is not None and processes.alive_pids()):
        processes.refresh()
        if pattern and not warned and glob.glob(pattern) and _take_timeout():
            warned = True  # --signal=USR2@N: the job step's processes get the warning
            step = _dir() / f"step-{key}"
            if step.exists():
                signal_processes(process_tree(int(step.read_text())), signal.SIGUSR2)
        how = _stop_request(key) if stopped is None else None
        if how in ("NODE_FAIL", "OUT_OF_MEMORY"):
            stopped = how
            sent.append({"signal": "SIGKILL", "processes": _described(processes.refresh())})
            processes.signal(signal.SIGKILL)
        elif how is not None:
            stopped, kill_at = how, time.monotonic() + kill_wait
            processes.signal(signal.SIGCONT)
            sent.append({"signal": "SIGTERM", "processes": _described(processes.refresh())})
            processes.signal(signal.SIGTERM)
        if kill_at is not None and time.monotonic() >= kill_at:
            processes.signal(signal.SIGKILL)  # KillWait is over
            kill_at = None
        time.sleep(0.2)
    processes.signal(signal.SIGKILL)  # what the job leaves behind goes with it
    return {"exit": process.returncode, "timed_out": warned, "stopped": stopped, "signals": sent}


def _described(processes: list[tuple[int, str]]) -> list[dict[str, Any]]:
    return [{"pid": pid, "session": session_of(pid)} for pid, _ in processes]


def _run_task(key: str) -> None:
    """Run one job (or array task) until it ends without being requeued."""
    while True:
        while (_dir() / "hold").exists():
            time.sleep(0.2)
        with _state() as state:
            job = state["jobs"][key]
            if job["cancelled"]:
                return
            job["state"], job["step_state"] = "RUNNING", "RUNNING"
            job["attempts"].append({"start": time.time()})
            job = dict(job)
        attempt = _run_attempt(key, job)
        code, stopped = attempt["exit"], attempt["stopped"]
        with _state() as state:
            job = state["jobs"][key]
            job["attempts"][-1].update(end=time.time(), **attempt)
            requeue_mode = os.environ.get("FAKE_SLURM_PREEMPT_MODE", "REQUEUE") == "REQUEUE"
            requeued = (job["requeue"] and stopped is None and not job["cancelled"]) or (
                job["requeueable"] and ((stopped == "PREEMPTED" and requeue_mode) or stopped == "NODE_FAIL"))
            job["requeue"] = False
            job["step_state"] = stopped or ("COMPLETED" if code == 0 else "FAILED")
            if requeued:
                job["state"] = "PENDING"
                continue
            job["state"] = stopped or ("COMPLETED" if code == 0 else "FAILED")
            job["ended_at"] = time.time()
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
def _shown_state(job: dict[str, Any]) -> str:
    return f"CANCELLED by {os.getuid()}" if job["state"] == "CANCELLED" else job["state"]


def _unstarted(job: dict[str, Any]) -> bool:
    """An array task that never started: SLURM shows those of an array as one range."""
    return job["state"] == "PENDING" and not job["attempts"] and job["task"] is not None


def _accounting_lines(state: dict[str, Any], number: str) -> list[str]:
    """sacct's lines for job (array) ``number``: tasks never started as ranges, each started one with its steps."""
    lines, pending = [], []
    jobs = sorted(((k, j) for k, j in state["jobs"].items() if j["array_id"] == number),
                  key=lambda item: item[1]["task"] or 0)
    for key, job in jobs:
        if _unstarted(job):
            pending.append(job["task"])
            continue
        if job["state"] == "PENDING":  # requeued: the new allocation has no steps yet
            lines.append(f"{key}|PENDING|None assigned")
            continue
        lines.append(f"{key}|{_shown_state(job)}|fakenode")
        step = job["step_state"] or "RUNNING"
        extern = "RUNNING" if job["state"] == "RUNNING" else "COMPLETED"
        lines += [f"{key}.batch|{'CANCELLED' if step == 'CANCELLED' else step}|fakenode",
                  f"{key}.extern|{extern}|fakenode", f"{key}.0|{step}|fakenode"]
    if pending:
        parallelism = jobs[0][1]["parallelism"]
        span = f"{pending[0]}-{pending[-1]}" if len(pending) > 1 else f"{pending[0]}"
        lines.insert(0, f"{number}_[{span}%{parallelism}]|PENDING|None assigned")
    return lines


def sacct(args: list[str]) -> int:
    if os.environ.get("FAKE_SLURM_NO_ACCOUNTING"):
        print("sacct: error: Slurm accounting storage is disabled", file=sys.stderr)
        return 1
    wanted = [args[i + 1] for i, a in enumerate(args) if a == "-j"]
    state = read_state(_dir())
    print("JobID|State|NodeList")
    for number in dict.fromkeys(w.split("_")[0] for w in wanted):
        for line in _accounting_lines(state, number):
            print(line)
    return 0


def _controller_knows(job: dict[str, Any]) -> bool:
    age = float(os.environ.get("FAKE_SLURM_MIN_JOB_AGE", "300"))
    return job["ended_at"] is None or time.time() - job["ended_at"] < age


def squeue(args: list[str]) -> int:
    """``squeue --noheader --format=%i %T --jobs=ID`` (the form mtl.ablate.slurm asks), as the controller answers."""
    if os.environ.get("FAKE_SLURM_CONTROLLER_DOWN"):
        print("squeue: error: Unable to contact slurm controller (connect failure)", file=sys.stderr)
        return 1
    wanted = {a.split("=", 1)[1] for a in args if a.startswith("--jobs=")}
    state = read_state(_dir())
    shown = []
    for number in sorted({w.split("_")[0] for w in wanted}):
        jobs = [(k, j) for k, j in state["jobs"].items() if j["array_id"] == number and _controller_knows(j)]
        pending = [j["task"] for _, j in jobs if _unstarted(j)]
        if pending:
            span = f"{pending[0]}-{pending[-1]}" if len(pending) > 1 else f"{pending[0]}"
            shown.append(f"{number}_[{span}%{jobs[0][1]['parallelism']}] PENDING")
        shown += [f"{k} {j['state']}" for k, j in jobs if not _unstarted(j)]
    if not shown:
        print("slurm_load_jobs error: Invalid job id specified", file=sys.stderr)
        return 1
    for line in shown:
        print(line)
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
    """``scancel ID``: the job's processes stopped (SIGTERM, then SIGKILL after KillWait), state CANCELLED;
    ``scancel ID --signal SIG``: SIG to the job step's processes, the job goes on."""
    signum = None
    if "--signal" in args:
        signum = getattr(signal, args[args.index("--signal") + 1])
    ids = [a for a in args if not a.startswith("-") and not a.startswith("SIG")]
    with _state() as state:
        for key, job in state["jobs"].items():
            if key not in ids and job["array_id"] not in ids:
                continue
            if signum is not None:
                step = _dir() / f"step-{key}"
                if job["state"] == "RUNNING" and step.exists():
                    signal_processes(process_tree(int(step.read_text())), signum)
                continue
            job["cancelled"] = True
            if job["state"] == "PENDING":
                job["state"], job["ended_at"] = "CANCELLED", time.time()
            elif job["state"] == "RUNNING":
                (_dir() / f"stop-{key}").write_text("CANCELLED")
    return 0


if __name__ == "__main__":
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "_runner":
        sys.exit(runner(*rest))
    sys.exit({"sbatch": sbatch, "srun": srun, "sacct": sacct, "squeue": squeue, "scontrol": scontrol,
              "scancel": scancel}[command](rest))
