"""The fault tally: kill it, fill its disk, feed it nonsense -- and count what was lost (it must be 0).

    python bench/fault_tally.py                     # 10 SIGKILLs and 10 SIGTERMs, every other fault once
    MTL_FAULT_TRIALS=50 python bench/fault_tally.py  # more kills of each signal
    MTL_FAULT_SEED=7 ...                            # other kill moments (default: a random seed, printed)
    MTL_FAULT_ONLY=input,secrets ...                # some areas only (preemption, storage, data, input,
                                                    # divergence, secrets, signals, records, archives,
                                                    # hostile)

Uses the fault helpers of the tests (tests/faults/): training processes forked from a server that
imported torch once, a check of every run file after every kill, bit-for-bit comparison with an
uninterrupted reference run, full-disk writes, damaged datasets, fuzzed configs and entries, a real
divergence, a byte scan of a W&B-offline run and its export for fake credentials, and hostile inputs
(YAML bombs, absurd numbers, names that would become paths). Exit status 1 when anything was lost.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import sys
import tempfile
import time
import warnings
import zipfile
from collections import Counter
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

import torch  # noqa: E402
import yaml  # noqa: E402

from faults.checks import check_run_dir, run_differences  # noqa: E402
from faults.datasets import DAMAGES, damaged_copy  # noqa: E402
from faults.launcher import run_train  # noqa: E402
from faults.preemption import preempt  # noqa: E402
from faults.runs import FAULT_CONFIG, FREQUENT_CHECKPOINTS, fault_args, reference_run  # noqa: E402
from faults.secrets import fake_credentials, scan_for_secrets, secret_values  # noqa: E402
from faults.storage import fail_write, limit_file_size  # noqa: E402
from mtl.run import layout as rundir  # noqa: E402
from mtl.run.records import read_status  # noqa: E402

TRIALS = int(os.environ.get("MTL_FAULT_TRIALS", "10"))
SIGTERM_TRIALS = int(os.environ.get("MTL_FAULT_SIGTERM_TRIALS", str(TRIALS)))
SEED = int(os.environ.get("MTL_FAULT_SEED", random.SystemRandom().randrange(2**31)))
FUZZ_EXAMPLES = int(os.environ.get("MTL_FAULT_FUZZ_EXAMPLES", "500"))


class Tally:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.lost: list[str] = []
        self.files_checked = 0

    def add(self, area: str, text: str, problems: list[str], files_checked: int = 0) -> None:
        self.files_checked += files_checked
        self.lost += problems
        self.lines.append(f"{area:<11} {text}" + (f"  LOST {len(problems)}" if problems else ""))
        print(self.lines[-1], flush=True)


def preemption(tally: Tally, base: Path, reference: Path, wall_s: float) -> None:
    for kill_signal, trials, seed in ((signal.SIGKILL, TRIALS, SEED), (signal.SIGTERM, SIGTERM_TRIALS, SEED + 1)):
        started = time.monotonic()
        chains = preempt([*fault_args(), FREQUENT_CHECKPOINTS], base / kill_signal.name.lower(), reference,
                         kill_signal, trials, seed, max_delay_s=wall_s, num_epochs=FAULT_CONFIG["num_epochs"])
        kills = [k for c in chains for k in c.kills]
        problems = [p for c in chains for p in c.problems + c.differences]
        exact = sum(1 for c in chains if not c.differences)
        tally.add("preemption", f"{kill_signal.name}: {len(kills)} kills survived over {len(chains)} runs, "
                  f"{exact}/{len(chains)} ended bit-identical to the reference; exits "
                  f"{dict(Counter(k.exit_code for k in kills))}; phases {dict(Counter(k.phase for k in kills))} "
                  f"({time.monotonic() - started:.0f} s)", problems, sum(c.files_checked for c in chains))


def process_group(tally: Tally, base: Path) -> None:
    """Stop signals sent to the whole process group of a run with loader workers, as SLURM, containers
    and a closed terminal send them: each must end the run interrupted (143) and the rerun bit-identical."""
    from faults.launcher import run_train
    from faults.process_group import WORKERS, resume_and_compare, stop_group

    argv = [*fault_args(workers=WORKERS, workers_validation=WORKERS), FREQUENT_CHECKPOINTS]
    reference = base / "group-reference"
    code, _ = run_train([*argv, f"--log_dir={reference}"], base / "group-reference.log")
    if code != 0:
        tally.add("signals", f"the reference run with {WORKERS} workers exited {code}", [f"reference exit {code}"])
        return
    for signum in (signal.SIGTERM, signal.SIGUSR2, signal.SIGHUP, signal.SIGINT):
        run_dir = base / f"group-{signum.name.lower()}"
        stopped = stop_group(argv, run_dir, signum, base / f"{run_dir.name}.log")
        problems = stopped.problems or resume_and_compare(argv, run_dir, reference, base / f"{run_dir.name}.log")
        tally.add("signals", f"process group {signum.name} with {WORKERS} workers: exit {stopped.exit_code}, "
                  f"state {stopped.state!r} ({stopped.error.split(';')[0]}), rerun "
                  f"{'bit-identical' if not problems else 'DIFFERS'} to an unbroken run", problems,
                  stopped.files_checked)


STORAGE_FAULTS = [(rundir.LAST_CHECKPOINT, 3, True), (rundir.METRICS_FILE, 3, True), (rundir.SUBMISSION_FILE, 1, True),
                  (rundir.STATUS_FILE, 4, False), (rundir.BEST_CHECKPOINT, 1, True), (rundir.CONFIG_FILE, 1, True)]


def storage(tally: Tally, base: Path, reference: Path) -> None:
    problems, named, resumed, files = [], 0, 0, 0
    cases = [(f"{name} write #{n} fails (ENOSPC)", fail_write(name, n), name, "No space left on device", again)
             for name, n, again in STORAGE_FAULTS]
    cases.append(("files over 100 MB refused (RLIMIT_FSIZE)", limit_file_size(100 * 2**20), "last.pt",
                  "File too large", True))
    for index, (label, setup, name, reason, again) in enumerate(cases):
        run_dir = base / f"storage-{index}"
        argv = [*fault_args(), FREQUENT_CHECKPOINTS, f"--log_dir={run_dir}"]
        code, _ = run_train(argv, base / f"storage-{index}.log", setup=setup)
        status = _status(run_dir)
        check = check_run_dir(run_dir)
        files += check.files_checked
        problems += check.problems + [f"{label}: temporary file {p} left behind" for p in check.temporaries]
        if code != 1 or status.get("state") != "failed":
            problems.append(f"{label}: exit {code}, state {status.get('state')!r}, expected 1 and 'failed'")
        elif name in status["error"] and reason in status["error"]:
            named += 1
        else:
            problems.append(f"{label}: error does not name {name} and {reason!r}: {status['error']}")
        if again:
            code, _ = run_train(argv, base / f"storage-{index}.log")
            differences = run_differences(run_dir, reference)
            problems += differences + ([f"{label}: restart exited {code}"] if code else [])
            resumed += not differences and not code
    tally.add("storage", f"{len(cases)} failed writes: run marked failed naming the file {named}/{len(cases)}, "
              f"restarted and ended bit-identical {resumed}/{sum(c[-1] for c in cases)}", problems, files)


def bad_data(tally: Tally, base: Path) -> None:
    from mtl.data.integrity import check_dataset
    from mtl.data.synthetic import SyntheticParams, build_synthetic

    params = SyntheticParams(num_train=FAULT_CONFIG["synthetic_num_train"], num_val=FAULT_CONFIG["synthetic_num_val"],
                             num_test=FAULT_CONFIG["synthetic_num_test"], height=FAULT_CONFIG["synthetic_height"],
                             width=FAULT_CONFIG["synthetic_width"])
    sound = build_synthetic(base / "sound-data", params)
    problems, checked, refused = [], 0, 0
    for index, damage in enumerate(DAMAGES):
        root = damaged_copy(sound, base / f"data-{index}", damage)
        if any(damage.named_in(p, root) for p in check_dataset(root)):
            checked += 1
        else:
            problems.append(f"{damage.name}: the integrity check does not name the file")
        run_dir = base / f"data-run-{index}"
        code, _ = run_train([*fault_args(workers=1, workers_validation=1), "--dataset=miniscapes",
                             f"--dataset_root={root}", f"--log_dir={run_dir}"], base / f"data-run-{index}.log")
        status = _status(run_dir)
        error = status.get("error") or ""
        if code == 1 and status.get("step") == 0 and damage.named_in(error, root) and "\n" not in error:
            refused += 1
        else:
            problems.append(f"{damage.name}: mtl-train exit {code}, step {status.get('step')}, error {error[:300]!r}")
    tally.add("bad data", f"{len(DAMAGES)} damaged datasets: integrity check named the file {checked}/{len(DAMAGES)}, "
              f"mtl-train refused before training naming it {refused}/{len(DAMAGES)}", problems)


def bad_input(tally: Tally, base: Path) -> None:
    from hypothesis import given, settings

    import test_faults_inputs as inputs
    from mtl.ablate.entry import EntryError, load_entry, parse_entry
    from mtl.config import ConfigError, config_from_cli, make_config

    counts: Counter = Counter()
    problems: list[str] = []

    def attempt(kind: str, function, value, known) -> None:
        counts[kind] += 1
        try:
            function(value)
            counts["accepted"] += 1
        except (ConfigError, EntryError):
            counts["clean error"] += 1
        except Exception as exc:  # noqa: BLE001 - what the tally counts
            if known(exc):
                counts["known bug"] += 1
            else:
                problems.append(f"{kind} {value!r}: {type(exc).__name__}: {exc}")

    text_path = base / "problem1.text.yaml"

    def from_text(text: str) -> None:
        text_path.write_text(text)
        load_entry(text_path)

    fuzz = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None)
    runs = [
        ("config mapping", inputs.st.dictionaries(inputs.config_keys, inputs.values, max_size=4), make_config),
        ("command line", inputs.st.lists(inputs.tokens, max_size=6), config_from_cli),
        ("entry document", inputs.entry_documents(), lambda doc: parse_entry(doc, Path("problem1.fuzz.yaml"))),
        ("entry file text", inputs.st.text(max_size=200), from_text),
    ]
    def property_for(kind: str, function):
        def property_(value) -> None:
            attempt(kind, function, value, lambda exc: inputs.known_config_bug(exc) or (
                kind == "entry document" and inputs.known_entry_bug(exc, value)))
        return property_

    for kind, strategy, function in runs:
        fuzz(given(strategy)(property_for(kind, function)))()
    total = sum(counts[kind] for kind, _, _ in runs)
    tally.add("bad input", f"{total} inputs tried ({', '.join(f'{counts[k]} {k}s' for k, _, _ in runs)}): "
              f"{counts['clean error']} clean errors, {counts['accepted']} accepted, {len(problems)} unhandled, "
              f"{counts['known bug']} hit a reported bug", problems)


def _status(run_dir: Path) -> dict:
    """The run's status through the one reader, as plain values ({} when it has none)."""
    status = read_status(run_dir)
    return status.model_dump(mode="json") if status is not None else {}


def divergence(tally: Tally, base: Path) -> None:
    run_dir = base / "diverges"
    code, _ = run_train([*fault_args(optimizer_lr=1e6), FREQUENT_CHECKPOINTS, f"--log_dir={run_dir}"],
                        base / "diverges.log")
    status = _status(run_dir)
    problems = [] if code == 3 and status["state"] == "diverged" else [f"lr 1e6: exit {code}, state {status['state']}"]
    kept = status.get("checkpoint_step")
    if kept is not None:
        state = torch.load(rundir.RunDirectory(run_dir).last, map_location="cpu", weights_only=False)
        if state["step"] != kept or not all(torch.isfinite(t).all() for t in state["model"].values()
                                            if t.is_floating_point()):
            problems.append(f"the kept checkpoint is not the finite one of step {kept}")
    tally.add("divergence", f"lr 1e6: exit {code}, state {status['state']!r}, detected at step "
              f"{status.get('diverged_step')}, finite checkpoint kept at step {kept}", problems)


def secrets(tally: Tally, base: Path) -> None:
    from mtl.ablate.entry import load_entries
    from mtl.ablate.planner import plan
    from mtl.config import cli_args
    from mtl.suite import main as ablate_main

    ablations, runs_dir, out = base / "ablations", base / "runs", base / "export"
    (ablations / "profiles").mkdir(parents=True)
    (ablations / "profiles" / "tiny.yaml").write_text(yaml.safe_dump({**FAULT_CONFIG, "wandb_mode": "offline"}))
    (ablations / "problem1.secrets.yaml").write_text("question: Leaks?\nitem: '1.1'\nbase: tiny\n")
    (spec,) = plan(load_entries(ablations)["problem1.secrets"], None, runs_dir)
    env = fake_credentials(base / "home")
    env.update({name: str(base / "home" / ".wandb")
                for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR")})
    code, _ = run_train(cli_args(spec.config), base / "secrets.log", env=env)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the archive's path and size: not part of the tally
            exported = ablate_main(["export", "problem1.secrets", "--team", "team", "--ablations-dir",
                                    str(ablations), "--runs-dir", str(runs_dir), "--out", str(out), "--no-cache"])
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
    scanned, findings = scan_for_secrets([spec.run_dir, out, base / "secrets.log"])
    problems = findings + ([f"run exit {code}, export exit {exported}"] if code or exported else [])
    tally.add("secrets", f"{scanned} files and zip members of a W&B-offline run and its export scanned for "
              f"{len(secret_values())} planted credentials: {len(findings)} found", problems)


def records(tally: Tally, base: Path, reference: Path) -> None:
    """Finished runs with files deleted or damaged, kills between the two checkpoint writes, suites racing."""
    from faults.records import DAMAGES, concurrent_suites, damaged_records, kill_between_checkpoints
    from faults.runs import FAULT_CONFIG

    rebuilt, refused, problems = damaged_records(reference, base)
    expected_refused = sum(1 for d in DAMAGES if d[2])
    tally.add("records", f"{len(DAMAGES)} finished runs with files deleted or damaged: rebuilt byte-identical "
              f"{rebuilt}/{len(DAMAGES) - expected_refused}, refused naming the file {refused}/{expected_refused}, "
              "retrained 0", problems)
    agreed, problems = kill_between_checkpoints(base)
    tally.add("records", f"kill between the checkpoint writes (after last.pt, after best.pt): best.pt, status and "
              f"trace agree after resume {agreed}/2", problems)
    profile = {k: v for k, v in FAULT_CONFIG.items() if k != "num_threads"}
    text, problems, files = concurrent_suites(base, profile)
    tally.add("records", f"two `mtl-ablate run --force` at once, then two `run` at once: {text}", problems, files)


def _zip_of(path: Path, members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns "Duplicate name", and writes it anyway
        for name, data in members:
            archive.writestr(name, data)
    return path


def hostile_archives(tally: Tally, base: Path) -> None:
    """Archives built to hurt their reader, refused from what they declare, each naming the member."""
    from mtl.safezip import ArchiveError
    from mtl.train.submission import validate_submission
    from report.leaks import MAX_NESTING_DEPTH, scan_file

    folder = base / "archives"
    folder.mkdir()
    bomb = folder / "bomb.zip"  # 1 GiB of zeros deflated to about 1 MB, written in chunks
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("predictions/semseg/0.png", "w", force_zip64=True) as member:
        for _ in range(64):
            member.write(bytes(16 << 20))
    nested = b"AWS key AKIAABCDEFGHIJKLMNOP\n"
    for level in range(MAX_NESTING_DEPTH + 1):
        nested = _zip_of(folder / "level.zip", [(f"level{level}.zip" if level else "notes.txt", nested)]).read_bytes()
    (folder / "deep.zip").write_bytes(nested)
    cases = [("1 GiB-inflating member", lambda: validate_submission(bomb), "predictions/semseg/0.png"),
             ("duplicate member names", lambda: validate_submission(_zip_of(
                 folder / "twice.zip", [("metrics.csv", b"a"), ("metrics.csv", b"b")])), "metrics.csv"),
             ("high compression ratio", lambda: validate_submission(_zip_of(
                 folder / "ratio.zip", [("metrics.csv", bytes(64 << 20))], zipfile.ZIP_DEFLATED)), "metrics.csv"),
             (f"zip nested {MAX_NESTING_DEPTH + 1} deep", lambda: scan_file(folder / "deep.zip"), "level")]
    refused, problems = 0, []
    for label, read, member in cases:
        try:
            messages = [str(message) for message in read()]
        except ArchiveError as exc:
            messages = [str(exc)]
        if any(member in message for message in messages):
            refused += 1
        else:
            problems.append(f"{label}: not refused naming {member} ({messages[:1]})")
    tally.add("archives", f"{len(cases)} hostile archives (bomb, duplicates, ratio, nesting): refused from their "
                          f"declarations naming the member {refused}/{len(cases)}", problems)


def _refused(read, expected: type, needles: list[str], limit_s: float = 5.0) -> str:
    """"" when ``read()`` raises ``expected`` within ``limit_s`` seconds with a message under 2,000 characters
    that holds every one of ``needles``; else what went wrong."""
    started = time.monotonic()
    try:
        read()
    except expected as exc:
        message, elapsed = str(exc), time.monotonic() - started
        missing = [n for n in needles if n not in message]
        if missing or len(message) >= 2000 or elapsed > limit_s:
            return f"{len(message)} characters in {elapsed:.1f} s, missing {missing}: {message[:300]!r}"
        return ""
    except Exception as exc:  # noqa: BLE001 - what the tally counts
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    return "accepted"


def _yaml_bombs(base: Path, hostile) -> tuple[str, int, list[str]]:
    """Each YAML bomb as a config file (mtl-train --config), an entry's overrides and a profile."""
    from mtl.ablate.entry import EntryError, load_entries, load_profile
    from mtl.config import ConfigError, config_from_cli

    problems, cases = [], 0
    for index, (kind, text) in enumerate(hostile.BOMBS.items()):
        folder = base / "bombs" / str(index) / "ablations"
        (folder / "profiles").mkdir(parents=True)
        config, entry = folder.parent / "config.yaml", folder / "problem1.bomb.yaml"
        config.write_text(text + "\n")
        (folder / "profiles" / "bomb.yaml").write_text(text + "\n")
        entry.write_text(f"question: q\nitem: '1.1'\nbase: bomb\noverrides: {text}\n")
        readers = [("config file", partial(config_from_cli, [f"--config={config}"]), ConfigError, str(config)),
                   ("entry", partial(load_entries, folder), EntryError, str(entry)),
                   ("profile", partial(load_profile, folder, "bomb"), EntryError, "bomb.yaml")]
        for reader, read, expected, name in readers:
            cases += 1
            problem = _refused(read, expected, [name])
            problems += [f"{kind} bomb as a {reader}: {problem}"] if problem else []
    return (f"YAML bombs ({len(hostile.BOMBS)} kinds as a config file, an entry and a profile) refused in under 5 s "
            "naming the file", cases, problems)


def _absurd_numbers(hostile) -> tuple[str, int, list[str]]:
    """Each absurd value through the schema, and as a command-line flag of mtl-train: refused naming the key
    and stating the bound."""
    from mtl.config import ConfigError, config_from_cli, format_config_value, make_config

    problems, cases = [], 0
    for key, value in hostile.ABSURD.items():
        for form, read in (("value", partial(make_config, {key: value})),
                           ("flag", partial(config_from_cli, [f"--{key}={format_config_value(value)}"]))):
            cases += 1
            problem = _refused(read, ConfigError, [key]) or _states_a_bound(read)
            problems += [f"{key}={value} as a {form}: {problem}"] if problem else []
    return (f"absurd numbers ({len(hostile.ABSURD)} keys as values and as flags) refused naming the key and "
            "the bound", cases, problems)


def _states_a_bound(read) -> str:
    """"" when the error ``read()`` raises states a bound; else what it says."""
    try:
        read()
    except Exception as exc:  # noqa: BLE001 - the message is what is checked
        message = str(exc)
        return "" if "at most" in message or "at least" in message else f"no bound stated: {message[:300]!r}"
    return "accepted"


def _path_names(base: Path, hostile) -> tuple[str, int, list[str]]:
    """Names that would become paths: ad-hoc names and ids, profile names, grid values (hypothesis draws)
    and a dry run that must write nothing."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from mtl.ablate.adhoc import AdhocError, adhoc_id, saved_adhoc_entries
    from mtl.ablate.entry import EntryError, profile_path
    from mtl.ablate.entry_format import grid_point_name
    from mtl.suite import main as ablate_main
    from support import tiny_ablations

    project = base / "paths" / "a" / "b" / "c"
    ablations, runs = tiny_ablations(project / "ablations"), project / "runs"
    names = ["../../../escape", "../../../../outside-abl", "a/b", "..", ".", ".hidden", "/abs", "x\x00y", "x\x01y",
             "adhoc../x", "a" * 300]
    problems, cases = [], 0
    for name in names:
        cases += 2
        for what, read, expected in (("--name", partial(adhoc_id, name), AdhocError),
                                     ("profile", partial(profile_path, ablations, name), EntryError)):
            problem = _refused(read, expected, [])
            problems += [f"{what} {name!r}: {problem}"] if problem else []
    outside = project / "escape" / "entry.yaml"
    outside.parent.mkdir()
    outside.write_text("question: q\nitem: '0'\nbase: tiny\n")
    (runs / "adhoc...").mkdir(parents=True)
    cases += 1
    if saved_adhoc_entries(ablations, runs, ["adhoc.../../../escape"]):
        problems.append("the ad-hoc id adhoc.../../../escape was read from outside the runs folder")
    before = sorted(base.rglob("*"))
    cases += 1
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = ablate_main(["run", "--grid", "optimizer_lr=0.01,0.1", "--base", "tiny", "--name", "dry", "--save",
                            "--dry-run", "--ablations-dir", str(ablations), "--runs-dir", str(runs)])
    written = sorted(set(base.rglob("*")) - set(before))
    if code != 0 or written:
        problems.append(f"a dry run exited {code} and wrote {[str(p) for p in written[:5]]}")
    drawn = 0

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None)
    @given(st.lists(st.text(max_size=12), min_size=2, max_size=4, unique=True))
    def grid_values(values: list[str]) -> None:
        nonlocal drawn
        drawn += 1
        made = [grid_point_name({"pretrained_weights_path": value}) for value in values]
        unsafe = [n for n in made if "/" in n or "\x00" in n or n in (".", "..") or n.startswith(".")]
        if unsafe or len(set(made)) != len(made):
            problems.append(f"grid values {values!r} became {made!r}")

    grid_values()
    return (f"names that would be paths ({len(names)} names as --name and as a profile, an ad-hoc id read back, "
            f"a dry run, {drawn} drawn grids of path-like values) refused or made one safe and distinct folder name",
            cases + drawn, problems)


def hostile_inputs(tally: Tally, base: Path) -> None:
    """Inputs built to hurt (tests/test_hostile_inputs.py): each refused quickly naming what is at fault, or
    made safe."""
    import test_hostile_inputs as hostile

    for text, cases, problems in (_yaml_bombs(base, hostile), _absurd_numbers(hostile), _path_names(base, hostile)):
        tally.add("hostile", f"{cases - len(problems)}/{cases} {text}", problems)


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mtl-fault-tally-") as tmp:
        base = Path(tmp)
        os.environ.setdefault("MTL_CACHE_DIR", str(base / "cache"))
        print(f"fault tally: seed {SEED} (MTL_FAULT_SEED), {TRIALS} SIGKILL and {SIGTERM_TRIALS} SIGTERM trials, "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
        def reference() -> tuple[Path, float]:  # trained on first use: some areas need no run
            known = rundir_reference.get(base)
            if known is None:
                known = rundir_reference[base] = reference_run(base)
                print(f"reference run: {known[1]:.1f} s uninterrupted; kill moments drawn from [0, {known[1]:.1f}] s "
                      "after each start", flush=True)
            return known

        rundir_reference: dict[Path, tuple[Path, float]] = {}
        tally = Tally()
        areas = {"preemption": lambda: preemption(tally, base, *reference()),
                 "storage": lambda: storage(tally, base, reference()[0]), "data": lambda: bad_data(tally, base),
                 "input": lambda: bad_input(tally, base), "divergence": lambda: divergence(tally, base),
                 "secrets": lambda: secrets(tally, base), "signals": lambda: process_group(tally, base),
                 "records": lambda: records(tally, base, reference()[0]),
                 "archives": lambda: hostile_archives(tally, base), "hostile": lambda: hostile_inputs(tally, base)}
        chosen = os.environ.get("MTL_FAULT_ONLY", ",".join(areas)).split(",")
        for name in chosen:
            if name not in areas:
                raise SystemExit(f"MTL_FAULT_ONLY: unknown area {name!r}; expected some of {', '.join(areas)}")
            areas[name]()
    print(f"{'files':<11} {tally.files_checked} run files opened and checked after faults")
    print(f"{'lost':<11} {len(tally.lost)}  ({time.monotonic() - started:.0f} s in all)")
    for problem in tally.lost:
        print(f"  {problem}")
    return 1 if tally.lost else 0


if __name__ == "__main__":
    sys.exit(main())
