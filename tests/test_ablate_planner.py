"""Planning: resolved configs, stable run names, and 'best of' bases read from (planted) run records."""

from __future__ import annotations

import json

import pytest

from mtl.ablate.entry import EntryError, load_entries, load_entry
from mtl.ablate.planner import RunSpec, UnresolvedBase, make_plan, plan
from mtl.ablate.selection import select_runs
from mtl.config import make_config
from mtl.run.best import best_point, better_point, deciding_rule, point_rank
from mtl.run.layout import RunDirectory, parse_run_name, remember_profile, short_variant
from mtl.run.model import ValidationPoint
from mtl.run.status import StatusWriter
from mtl.suite import main
from support import REPO, write_entry

ABLATIONS = REPO / "ablations"


def plant_run(spec: RunSpec, graders: list[float], state: str = "finished", si: float = 30.0) -> None:
    """A hand-written run directory: the resolved config, a status and one validation point per epoch."""
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    (spec.run_dir / "config.yaml").write_text(spec.config.to_yaml())
    points = []
    for epoch, grader in enumerate(graders, start=1):
        points.append({"step": epoch * 10, "epoch": epoch, "time": float(epoch), "train/loss": 1.0 / epoch})
        points.append({"step": epoch * 10, "epoch": epoch, "time": float(epoch), "val/grader": grader,
                       "val/iou": 50 + grader / 2, "val/si_logrmse": si - epoch})
    (spec.run_dir / "metrics.jsonl").write_text("".join(json.dumps(p) + "\n" for p in points))
    status = {"state": state, "error": None if state == "finished" else "boom", "epoch": len(graders),
              "num_epochs": spec.config.num_epochs, "step": 10 * len(graders), "best": None}
    (spec.run_dir / "status.json").write_text(json.dumps(status))


def test_every_entry_plans_and_inherits_the_planted_winner(tmp_path):
    """Walk the whole chain: plant results where the last variant wins, and check the next entry builds on it."""
    runs_dir = tmp_path / "runs"
    entries = load_entries(ABLATIONS)
    planted: dict[str, dict[str, dict]] = {}  # entry id -> variant -> hyperparameters
    for entry in entries.values():
        runs = plan(entry, "quick", runs_dir)
        assert len(runs) == entry.run_count()
        assert len({r.run_dir for r in runs}) == len(runs)
        for run in runs:
            # A run whose config finished in an earlier entry is that entry's run, not trained again.
            if run.reused_from is None:
                assert run.run_dir == runs_dir.absolute() / entry.id / run.name
            else:
                assert run.run_dir == runs_dir.absolute() / run.reused_from
                assert run.run_dir.name.endswith(f"-s{run.seed}-{run.config.config_hash()}")
            assert run.name == f"{run.variant}-s{run.seed}-{run.config.config_hash()}"
            assert run.config.log_dir == str(run.run_dir)
            assert (run.config.wandb_group, run.config.wandb_job_type) == (entry.id, run.variant)
            assert run.config.wandb_tags == (entry.problem,)
            assert run.config.dataset == "synthetic"  # the quick profile
            assert make_config(run.config.model_dump()) == run.config
        if entry.base_entry is not None:
            # The winner (the last variant, planted below) or the prescribed variant, whichever the base names.
            source = planted[entry.base_entry]
            expected = source[entry.variant_of[1]] if entry.variant_of else list(source.values())[-1]
            # Every run starts from the base's hyperparameters, except where the entry varies them.
            varied = set(runs[0].varied) | set(entry.overrides) | {"seed"}
            for run in runs:
                hp = run.config.hyperparameters()
                for key, value in expected.items():
                    if key not in varied and key not in run.differences:
                        assert hp[key] == value, (entry.id, key)
        variants = list(dict.fromkeys(r.variant for r in runs))
        for run in runs:
            if run.reused_from is None:
                plant_run(run, [5.0 + variants.index(run.variant), 10.0 + variants.index(run.variant), 7.0])
        planted[entry.id] = {}
        for run in runs:
            hp = run.config.hyperparameters()
            hp.pop("seed")
            planted[entry.id].setdefault(run.variant, hp)

    # Concrete inheritance: adam won problem1.optimizer, so the lr bracket is around adam's 1e-4.
    lr_runs = plan(entries["problem1.lr"], "quick", runs_dir)
    assert [r.config.optimizer for r in lr_runs] == ["adam"] * 3
    assert [r.config.optimizer_lr for r in lr_runs] == [1e-5, 1e-4, 1e-3]
    assert [r.variant for r in lr_runs] == ["optimizer_lr=1e-05", "optimizer_lr=0.0001", "optimizer_lr=0.001"]
    # The crop bracket is relative to the inherited crop (128 in the quick profile).
    crops = [r.config.aug_input_crop_size for r in plan(entries["problem4.crop"], "quick", runs_dir)]
    assert crops == [64, 96, 128]


def test_best_of_ranks_variants_by_their_mean_over_seeds(ablations, tmp_path):
    runs_dir = tmp_path / "runs"
    write_entry(ablations, "problem1.a", seeds=[0, 1], variants=[
        {"name": "lucky", "overrides": {"optimizer_lr": 0.05}},
        {"name": "steady", "overrides": {"optimizer_lr": 0.002}},
    ])
    write_entry(ablations, "problem1.b", base="best of problem1.a", grid={"batch_size": [2, 8]})
    entries = load_entries(ablations)
    graders = {("lucky", 0): [10, 50, 20], ("lucky", 1): [5, 10], ("steady", 0): [35, 30], ("steady", 1): [20, 30]}
    for run in plan(entries["problem1.a"], None, runs_dir):
        plant_run(run, graders[(run.variant, run.seed)])
    result = make_plan(entries["problem1.b"], None, runs_dir)
    winner = result.base.winner
    # lucky has the single best point (50) but a mean of 30; steady's mean is (35 + 30) / 2 = 32.5.
    assert winner.variant == "steady" and winner.score == pytest.approx(32.5)
    assert winner.scores_by_variant == {"lucky": pytest.approx(30.0), "steady": pytest.approx(32.5)}
    assert [r.config.optimizer_lr for r in result.runs] == [0.002, 0.002]
    assert [r.differences for r in result.runs] == [{"batch_size": 2}, {"batch_size": 8}]
    assert "best of problem1.a: variant 'steady'" in result.base.describe()


def test_failed_and_diverged_runs_do_not_win(ablations, tmp_path):
    runs_dir = tmp_path / "runs"
    write_entry(ablations, "problem1.a", grid={"optimizer_lr": [0.1, 0.01, 0.001]})
    write_entry(ablations, "problem1.b", base="best of problem1.a")
    entries = load_entries(ablations)
    first = plan(entries["problem1.a"], None, runs_dir)
    plant_run(first[0], [80.0], state="diverged")
    plant_run(first[1], [20.0])
    plant_run(first[2], [90.0], state="failed")
    runs = plan(entries["problem1.b"], None, runs_dir)
    assert runs[0].config.optimizer_lr == 0.01


def test_min_ranking_metric(ablations, tmp_path):
    runs_dir = tmp_path / "runs"
    write_entry(ablations, "problem1.a", grid={"depth_unit": ["meters", "log"]},
                rank_by={"metric": "val/si_logrmse", "mode": "min"})
    write_entry(ablations, "problem1.b", base="best of problem1.a")
    entries = load_entries(ablations)
    meters, log = plan(entries["problem1.a"], None, runs_dir)
    plant_run(meters, [40.0, 41.0], si=30.0)  # lowest SI-logRMSE 28
    plant_run(log, [10.0, 11.0], si=20.0)  # lowest 18: wins although its grader is lower
    assert plan(entries["problem1.b"], None, runs_dir)[0].config.depth_unit == "log"


def test_unfinished_base_is_an_error_naming_the_entry(ablations, tmp_path):
    runs_dir = tmp_path / "runs"
    write_entry(ablations, "problem1.a", grid={"optimizer_lr": [0.1, 0.01]})
    write_entry(ablations, "problem1.b", base="best of problem1.a")
    entries = load_entries(ablations)
    # The hint repeats the folders that differ from the defaults, so that pasted it trains these runs.
    hint = f"run `mtl-ablate run problem1.a --ablations-dir {ablations} --runs-dir {runs_dir}"
    with pytest.raises(UnresolvedBase) as error:
        plan(entries["problem1.b"], None, runs_dir)
    assert f"{hint}` first" in str(error.value)
    first = plan(entries["problem1.a"], None, runs_dir)
    plant_run(first[0], [10.0])
    plant_run(first[1], [12.0, 13.0], state="running")
    with pytest.raises(UnresolvedBase, match=r"1 of 2 runs not finished") as error:
        plan(entries["problem1.b"], None, runs_dir)
    assert f"{hint}` first" in str(error.value)
    # With another profile the hint says so.
    with pytest.raises(UnresolvedBase) as error:
        plan(entries["problem1.b"], "full", runs_dir)
    assert f"{hint} --profile full` first" in str(error.value)
    # Dry runs and `show` plan provisionally instead of failing.
    provisional = make_plan(entries["problem1.b"], None, runs_dir, allow_unresolved=True)
    assert not provisional.resolved and all(r.provisional for r in provisional.runs)
    assert f"{hint}` first" in provisional.base.describe()


def test_all_failed_base_is_unresolved(ablations, tmp_path):
    runs_dir = tmp_path / "runs"
    write_entry(ablations, "problem1.a")
    write_entry(ablations, "problem1.b", base="best of problem1.a")
    entries = load_entries(ablations)
    plant_run(plan(entries["problem1.a"], None, runs_dir)[0], [float("nan")], state="failed")
    with pytest.raises(UnresolvedBase, match="no finished runs"):
        plan(entries["problem1.b"], None, runs_dir)


def test_winner_keeps_profile_run_settings(ablations, tmp_path):
    """Paths, workers and devices come from the profile in use, not from the winner's record."""
    runs_dir = tmp_path / "runs"
    write_entry(ablations, "problem1.a", overrides={"batch_size": 2})
    write_entry(ablations, "problem1.b", base="best of problem1.a")
    entries = load_entries(ablations)
    (run,) = plan(entries["problem1.a"], None, runs_dir)
    run.config = run.config.replace(workers=7, dataset_root="/elsewhere", device="cuda:3")
    plant_run(run, [10.0])
    (later,) = plan(entries["problem1.b"], None, runs_dir)
    assert later.config.batch_size == 2
    assert (later.config.workers, later.config.dataset_root, later.config.device) == (1, None, "auto")
    assert later.config.wandb_group == "problem1.b"


def test_same_config_same_place_and_profiles_differ(tmp_path):
    entry = load_entry(ABLATIONS / "problem1.optimizer.yaml")
    first = plan(entry, "quick", tmp_path)
    again = plan(entry, "quick", tmp_path / ".." / tmp_path.name)
    assert [r.run_dir.resolve() for r in first] == [r.run_dir.resolve() for r in again]
    full = plan(entry, None, tmp_path)  # the entry's own profile
    assert full[0].config.dataset == "miniscapes" and full[0].config.num_epochs == 16
    assert {r.name for r in full}.isdisjoint({r.name for r in first})


def test_show_and_dry_run_print_the_plan(tmp_path, capsys):
    runs = ["--runs-dir", str(tmp_path)]
    assert main(["show", "problem1.optimizer", "--profile", "quick", *runs]) == 0
    out = capsys.readouterr().out
    assert "sgd-s0-" in out and "adam-s0-" in out and "optimizer=adam optimizer_lr=0.0001" in out
    assert main(["run", "problem1.lr", "--profile", "quick", "--dry-run", *runs]) == 0
    out = capsys.readouterr().out
    hint = f"run `mtl-ablate run problem1.optimizer --runs-dir {tmp_path} --profile quick` first"
    assert "unresolved" in out and hint in out
    # With --no-deps, a real run of an entry whose base is unresolved stops before starting anything; its
    # hint keeps the user's --runs-dir and --profile.
    assert main(["run", "problem1.lr", "--profile", "quick", "--devices", "cpu", "--no-deps", *runs]) == 2
    err = capsys.readouterr().err
    assert hint in err and "without --no-deps" in err
    assert not (tmp_path / "problem1.lr").exists()


def test_list_counts_run_directories(tmp_path, capsys):
    entries = load_entries(ABLATIONS)
    runs = plan(entries["problem1.optimizer"], "quick", tmp_path)
    plant_run(runs[0], [10.0])
    # Counted under the entry's own profile (full) until a `run` remembers another: quick runs are not its.
    assert main(["list", "--runs-dir", str(tmp_path)]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if "problem1.optimizer" in row)
    assert "0/2" in line and "full" in line
    remember_profile(tmp_path / "problem1.optimizer", "quick")
    assert main(["list", "--runs-dir", str(tmp_path)]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if "problem1.optimizer" in row)
    assert "1/2" in line and "partial" in line and "quick" in line
    plant_run(runs[1], [12.0], state="failed")
    main(["list", "--runs-dir", str(tmp_path)])
    line = next(row for row in capsys.readouterr().out.splitlines() if "problem1.optimizer" in row)
    assert "1/2" in line and "failed" in line
    plant_run(runs[1], [12.0])
    main(["list", "--runs-dir", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert "done" in next(row for row in lines if "problem1.optimizer" in row)
    # problem1.lr has not run: it takes the profile of the entry it builds on, whose runs resolve its base.
    line = next(row for row in lines if "problem1.lr " in row)
    assert "quick" in line and "0/3" in line and "not run" in line
    remember_profile(tmp_path / "problem1.optimizer", "full")
    main(["list", "--runs-dir", str(tmp_path)])
    line = next(row for row in capsys.readouterr().out.splitlines() if "problem1.lr " in row)
    assert "full" in line and "waiting for its base" in line


def test_an_entry_not_run_yet_takes_the_profile_its_base_entries_last_ran_with(tmp_path, capsys):
    """After `make demo` (problem1.lr under quick), problem1.batch_size plans under quick without --profile,
    so `run problem1.batch_size`, as the hints of `report --all` and `export` suggest, builds on those runs."""
    entries = load_entries(ABLATIONS)
    for entry_id in ("problem1.optimizer", "problem1.lr"):
        for i, spec in enumerate(make_plan(entries[entry_id], "quick", tmp_path, reuse=False).runs):
            plant_run(spec, [10.0 + i])
        remember_profile(tmp_path / entry_id, "quick")
    runs = ["--runs-dir", str(tmp_path)]
    assert main(["show", "problem1.batch_size", *runs]) == 0
    out = capsys.readouterr().out
    assert "base: best of problem1.lr: variant" in out and "profile quick" in out and "unresolved" not in out
    assert main(["show", "problem1.batch_size", "--profile", "full", *runs]) == 0  # a profile given still wins
    out = capsys.readouterr().out
    assert "profile full" in out and "unresolved" in out


def test_with_deps_puts_the_best_of_chain_first():
    from mtl.ablate.cli import with_prerequisites

    entries = load_entries(ABLATIONS)
    ordered = with_prerequisites([entries["problem1.batch_size"], entries["problem1.lr"]], entries)
    assert [e.id for e in ordered] == ["problem1.optimizer", "problem1.lr", "problem1.batch_size"]
    assert [e.id for e in with_prerequisites([entries["problem1.optimizer"]], entries)] == ["problem1.optimizer"]


def _finish(spec: RunSpec, graders: list[float], si: float = 30.0) -> None:
    """A planted run that counts as finished (status and packed submission)."""
    plant_run(spec, graders, si=si)
    RunDirectory(spec.run_dir).submission.write_bytes(b"planted")


def test_grader_ties_go_to_iou_minus_si_logrmse_then_the_earlier_step():
    points = [{"step": 10, "val/grader": 0.0, "val/iou": 5.29, "val/si_logrmse": 61.83},
              {"step": 40, "val/grader": 0.0, "val/iou": 5.98, "val/si_logrmse": 58.78},
              {"step": 50, "val/grader": 0.0, "val/iou": 5.98, "val/si_logrmse": 58.78},
              {"step": 60, "val/grader": float("nan"), "val/iou": 90.0, "val/si_logrmse": 1.0}]
    assert best_point(points)["step"] == 40  # better on both tasks; the later equal point loses on step
    # The trainer's status holds its best point without the val/ prefix: the same rule applies.
    assert better_point(points[1], {"step": 10, "grader": 0.0, "iou": 5.29, "si_logrmse": 61.83})
    assert not better_point(points[2], ValidationPoint(step=40, epoch=4, grader=0.0, iou=5.98, si_logrmse=58.78))
    assert not better_point(points[3], None)  # a non-finite grader never wins
    assert deciding_rule(point_rank(points[1]), point_rank(points[0])) == \
        "tie on grader 0.00: decided by IoU - SI-logRMSE"


def test_best_of_breaks_a_tie_on_the_grader_by_iou_minus_si_logrmse(ablations, tmp_path):
    runs_dir = tmp_path / "runs"
    write_entry(ablations, "problem1.a", grid={"optimizer_lr": [0.1, 0.01]})
    write_entry(ablations, "problem1.b", base="best of problem1.a")
    entries = load_entries(ablations)
    high_lr, low_lr = plan(entries["problem1.a"], None, runs_dir)
    plant_run(high_lr, [0.0], si=40.0)  # listed first, but worse on both tasks at the same grader
    plant_run(low_lr, [0.0], si=20.0)
    winner = make_plan(entries["problem1.b"], None, runs_dir).base.winner
    assert winner.variant == low_lr.variant
    assert winner.rule == "tie on grader 0.00: decided by IoU - SI-logRMSE"


def test_duplicate_grid_points_are_refused_naming_both(ablations, tmp_path):
    write_entry(ablations, "problem1.a", variants=[{"name": "x", "overrides": {"optimizer_lr": 0.01}}])
    write_entry(ablations, "problem1.b", base="problem1.a variant x",
                grid={"optimizer_lr": [{"times": 1}, 0.01]})
    with pytest.raises(EntryError) as caught:
        plan(load_entries(ablations)["problem1.b"], None, tmp_path / "runs")
    message = str(caught.value)
    assert "grid point optimizer_lr={times: 1} and grid point optimizer_lr=0.01 give the same config" in message


def test_long_variant_names_are_shortened_with_a_hash(ablations, tmp_path):
    keys = ["aspp", "decoder_skip", "decoder_skip_2x", "decoder_skip_1x", "decoder_se", "channels_last",
            "pin_memory", "persistent_workers", "cudnn_benchmark", "aug_geom_reflect"]
    write_entry(ablations, "problem1.a", grid={k: [False] for k in keys} | {"optimizer_lr": [0.01, 0.02]})
    runs = plan(load_entries(ablations)["problem1.a"], None, tmp_path / "runs")
    names = [run.run_dir.name for run in runs]
    assert len(set(names)) == 2 and all(len(name.encode()) < 200 for name in names)
    for run in runs:
        parsed = parse_run_name(run.run_dir.name)
        assert (parsed.seed, parsed.config_hash) == (run.seed, run.config.config_hash())
        assert parsed.variant == short_variant(run.variant) != run.variant
        assert run.config.wandb_job_type == run.variant  # the full name stays in the config
    runs[0].run_dir.mkdir(parents=True)  # the path fits


def test_a_finished_config_is_reused_and_older_configs_are_listed_apart(ablations, tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    write_entry(ablations, "problem1.a", variants=[{"name": "x", "overrides": {"optimizer_lr": 0.01}},
                                                     {"name": "y", "overrides": {"optimizer_lr": 0.02}}])
    write_entry(ablations, "problem1.b", base="problem1.a variant x", grid={"optimizer_lr": [{"times": 1}, 0.05]})
    entries = load_entries(ablations)
    x, y = plan(entries["problem1.a"], "quick", runs_dir)
    _finish(x, [10.0])
    same, other = make_plan(entries["problem1.b"], "quick", runs_dir).runs
    assert same.reused_from == f"problem1.a/{x.run_dir.name}" and same.run_dir == x.run_dir
    assert other.reused_from is None and other.run_dir.parent.name == "problem1.b"
    # --force plans its own directory (it would delete the other entry's run otherwise).
    assert make_plan(entries["problem1.b"], "quick", runs_dir, reuse=False).runs[0].reused_from is None
    # A run of an older config (the entry was edited) is left out of every reader, and named apart.
    _finish(other, [12.0])
    write_entry(ablations, "problem1.b", base="problem1.a variant x", grid={"optimizer_lr": [{"times": 1}, 0.04]})
    entries = load_entries(ablations)
    remember_profile(runs_dir / "problem1.b", "quick")
    selection = select_runs(entries["problem1.b"], runs_dir)
    assert selection.profile == "quick" and [r.run_dir for r in selection.runs][0] == x.run_dir
    assert selection.stale == [other.run_dir]
    assert "1 run of another profile or an older config not shown" in selection.stale_note
    assert main(["show", "problem1.b", "--ablations-dir", str(ablations), "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    assert "same as problem1.a/" in out and "1 run of another profile or an older config not shown" in out
    assert "prescribed variant 'x' of problem1.a" in out and "why this base:" in out


def test_a_prescribed_variant_that_was_skipped_is_stood_in_for_by_the_winner_and_said(ablations, tmp_path):
    runs_dir = tmp_path / "runs"
    write_entry(ablations, "problem1.a", grid={"pretrained": [False, True]})
    write_entry(ablations, "problem1.b", base="problem1.a variant pretrained=true")
    write_entry(ablations, "problem1.c", base="best of problem1.a")
    entries = load_entries(ablations)
    scratch, pretrained = plan(entries["problem1.a"], "quick", runs_dir)
    _finish(scratch, [10.0])
    pretrained.run_dir.mkdir(parents=True)
    StatusWriter(RunDirectory(pretrained.run_dir)).skipped(error="PretrainedWeightsUnavailable: offline")
    prescribed = make_plan(entries["problem1.b"], "quick", runs_dir)
    assert prescribed.base.values["pretrained"] is False
    assert prescribed.runs[0].reused_from is not None  # it is problem1.a's pretrained=false run itself
    said = ("variant 'pretrained=true' was skipped on this machine (PretrainedWeightsUnavailable), so the "
            "winner among the variants that ran, 'pretrained=false' (the only variant scored), stands in for it")
    assert prescribed.base.fallback == said
    assert said in prescribed.base.describe()
    assert select_runs(entries["problem1.b"], runs_dir, "quick").base_note == said
    # 'best of' chooses among the variants that ran, and says which one could not.
    base = make_plan(entries["problem1.c"], "quick", runs_dir).base
    assert base.winner.variant == "pretrained=false"
    assert "variant 'pretrained=true' skipped here (PretrainedWeightsUnavailable: offline)" in base.describe()
