"""Shared test code that is not a fixture: the tiny run settings, command lines for mtl-train, waiting for
a run's first epoch, and writing ablation entries. Tests and bench/fault_tally.py import it by name
(tests/ is on sys.path: pytest puts the rootdir conftest's folder there, bench scripts add it)."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ABLATIONS = REPO / "ablations"

# A tiny synthetic dataset and model budget: every key a real run takes, sized for seconds on a CPU.
TINY = {
    "dataset": "synthetic",
    "synthetic_num_train": 8,
    "synthetic_num_val": 4,
    "synthetic_num_test": 4,
    "synthetic_height": 64,
    "synthetic_width": 96,
    "aug_input_crop_size": 64,
    "num_epochs": 2,
    "batch_size": 2,
    "batch_size_validation": 4,
    "workers": 0,
    "workers_validation": 0,
    "num_threads": 1,
    "wandb_mode": "disabled",
    "progress": "plain",
}


def tiny_args(**overrides) -> list[str]:
    values = {**TINY, **overrides}
    return [f"--{k}={v}" for k, v in values.items()]


def train_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mtl.cli", *args]


_console_logs = itertools.count()


def forked_train(log_dir: Path, *args: str, setup=None, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess:
    """``mtl-train --log_dir=log_dir *args`` to its end, as its own process forked from the fault launcher's
    server (tests/faults/launcher.py: mtl-train's entry point without seconds of importing torch, the way
    `mtl-ablate run` starts trainings); ``setup`` is a launcher setup. Its exit code, and its console output
    (stdout and stderr together) as both ``stdout`` and ``stderr``; ``env``: variables over this process's."""
    from faults.launcher import run_train

    argv = [f"--log_dir={log_dir}", *args]
    console = log_dir.parent / f"{log_dir.name}.console-{next(_console_logs)}.log"
    code, _ = run_train(argv, console, env=env, setup=setup, timeout=300)
    output = console.read_text(errors="replace")
    return subprocess.CompletedProcess(argv, code, output, output)


def ablate_here(capsys, *argv: str) -> subprocess.CompletedProcess:
    """``mtl-ablate *argv`` through its main in this process, for a command whose process is not what is tested
    (a refusal, a grade): its exit code, stdout and stderr, as a finished subprocess would give them. A bug
    still shows: main prints its traceback, as the command does."""
    from mtl.suite import main

    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's refusals
        code = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["mtl-ablate", *argv], code, out, err)


def wait_for_epoch(run_dir: Path, process, timeout: float = 240, poll: float = 0.2) -> None:
    """Wait until ``run_dir`` has checkpointed an epoch; fail if ``process`` (an mtl-ablate run) ends first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if json.loads((run_dir / "status.json").read_text()).get("epoch", 0) >= 1:
                return
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        if process.poll() is not None:
            pytest.fail(f"mtl-ablate ended early:\n{process.communicate()[0]}")
        time.sleep(poll)
    pytest.fail(f"{run_dir.name} never checkpointed an epoch")


def write_entry(folder: Path, entry_id: str, **fields) -> Path:
    data = {"question": "Does it help?", "item": "1.1", "base": "quick", **fields}
    path = folder / f"{entry_id}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# The suite's end-to-end tests: the tiny budget with 4/2/2 images, threads left to the scheduler.
SUITE_PROFILE = {**{k: v for k, v in TINY.items() if k != "num_threads"}, "synthetic_num_train": 4,
                 "synthetic_num_val": 2, "synthetic_num_test": 2, "synthetic_width": 64}


def tiny_ablations(folder: Path) -> Path:
    """An entry folder whose only profile, ``tiny``, is SUITE_PROFILE."""
    (folder / "profiles").mkdir(parents=True)
    (folder / "profiles" / "tiny.yaml").write_text(yaml.safe_dump(SUITE_PROFILE))
    return folder


def write_tiny_entry(folder: Path, entry_id: str, **fields) -> Path:
    """write_entry on the ``tiny`` profile unless ``base`` says otherwise."""
    return write_entry(folder, entry_id, **{"base": "tiny", **fields})


def compile_latex(tex: Path) -> Path:
    """Compile ``tex`` where it lies with pdflatex or tectonic (skips the test when neither is installed;
    `apt-get install texlive-latex-recommended` gives pdflatex); returns the PDF."""
    for name in ("pdflatex", "tectonic"):
        path = shutil.which(name)
        if path:
            break
    else:
        pytest.skip("no LaTeX engine (pdflatex or tectonic) installed")
    command = [path, "-interaction=nonstopmode", "-halt-on-error", tex.name] if name == "pdflatex" else [path, tex.name]
    result = subprocess.run(command, cwd=tex.parent, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:]
    pdf = tex.with_suffix(".pdf")
    assert pdf.stat().st_size > 1000
    return pdf
