"""The entry format: every shipped entry is valid, bad entries fail naming file and key, the schema is current."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from mtl.ablate.entry import EntryError, Scaled, entry_json_schema, entry_json_schema_text, load_entries, load_entry
from mtl.ablate.planner import make_plan, plan
from mtl.suite import main
from support import REPO, write_entry

ABLATIONS = REPO / "ablations"


def error_of(path_or_folder: Path) -> EntryError:
    with pytest.raises(EntryError) as info:
        if path_or_folder.is_dir():
            load_entries(path_or_folder)
        else:
            load_entry(path_or_folder)
    return info.value


# ------------------------------------------------------------------------------------------ shipped entries


def test_every_assignment_question_has_a_valid_entry():
    entries = load_entries(ABLATIONS)
    expected = {
        "problem1.optimizer", "problem1.lr", "problem1.batch_size", "problem1.loss_weights", "problem1.single_task",
        "problem1.imagenet_init", "problem1.dilation", "problem1.aspp", "problem1.skip", "problem2.branched",
        "problem3.distillation", "problem3.decoder", "problem4.augmentation", "problem4.crop", "problem4.skips",
        "problem4.se", "problem4.depth_unit", "problem4.final",
    }
    assert set(entries) == expected
    # Sorted by problem and item: each entry of the chain builds on the one before it. The single-task
    # baselines stand beside it, on the base of the loss weights they are the baselines of.
    assert list(entries).index("problem1.single_task") == list(entries).index("problem1.loss_weights") + 1
    assert entries["problem1.single_task"].base == entries["problem1.loss_weights"].base
    assert entries["problem1.loss_weights"].single_task_baselines == "problem1.single_task"
    ids = [entry_id for entry_id in entries if entry_id != "problem1.single_task"]
    assert ids[0] == "problem1.optimizer" and ids[-1] == "problem4.final"
    for previous, entry in zip(ids, ids[1:]):
        assert entries[entry].base_entry == previous, entry
    # The assignment's prescriptions: ImageNet init kept after 1.2a, dilation FFT the reference for 1.3
    # and 1.4; elsewhere (Problem 4: free choice) the winner.
    assert entries["problem1.dilation"].variant_of == ("problem1.imagenet_init", "pretrained=true")
    assert entries["problem1.aspp"].variant_of == ("problem1.dilation", "FFT")
    assert entries["problem1.skip"].variant_of == ("problem1.aspp", "aspp=true")
    assert all(e.best_of for e in entries.values() if e.id.startswith("problem4."))
    assert entries["problem1.optimizer"].base == "full"


def test_yaml_strings_become_config_types(ablations):
    # YAML reads 1e-4 (no dot) as a string; the Config schema turns it into a float.
    path = write_entry(ablations, "problem1.x", overrides={"optimizer_lr": "1e-4", "pretrained": "true"},
                       grid={"batch_size": ["2", 8]})
    entry = load_entry(path)
    assert entry.overrides == {"optimizer_lr": 1e-4, "pretrained": True}
    assert entry.grid == {"batch_size": [2, 8]}


def test_scaled_grid_values_need_a_numeric_key(ablations):
    entry = load_entry(write_entry(ablations, "problem1.x", grid={"optimizer_lr": [{"times": 0.1}, 0.5]}))
    assert entry.grid["optimizer_lr"] == [Scaled(times=0.1), 0.5]
    error = error_of(write_entry(ablations, "problem1.y", grid={"optimizer": [{"times": 2}]}))
    assert error.key == "grid.optimizer[0]" and "numeric" in str(error)


# ------------------------------------------------------------------------------------------ bad entries


@pytest.mark.parametrize(
    "fields, key, words",
    [
        ({"quesiton": "typo"}, "quesiton", ["unknown key", "did you mean 'question'"]),
        ({"overrides": {"optimzer": "adam"}}, "overrides.optimzer", ["unknown config key", "did you mean 'optimizer'"]),
        ({"overrides": {"num_epochs": "many"}}, "overrides.num_epochs", ["'many'", "integer"]),
        ({"grid": {"optimizer_lr": [0.1, "fast"]}}, "grid.optimizer_lr[1]", ["'fast'", "number"]),
        ({"grid": {"optimizer": ["sgd", "rmsprop"]}}, "grid.optimizer[1]", ["'rmsprop'", "'sgd'", "'adam'"]),
        ({"variants": [{"name": "a"}, {"name": "b", "overrides": {"batch_size": "big"}}]},
         "variants[1].overrides.batch_size", ["'big'"]),
        ({"variants": [{"name": "a", "overides": {}}]}, "variants[0].overides", ["did you mean 'overrides'"]),
        ({"overrides": {"aug_input_crop_size": 100}}, "overrides.aug_input_crop_size", ["multiple of 32"]),
        ({"grid": {"optimzer_lr": [0.1]}}, "grid.optimzer_lr", ["unknown config key", "did you mean 'optimizer_lr'"]),
        ({"grid": {"optimizer_lr": [{"times": 2, "plus": 1}]}}, "grid.optimizer_lr[0].plus", ["unknown key 'plus'"]),
        ({"grid": {"optimizer_lr": []}}, "grid.optimizer_lr", ["at least 1 item"]),
        ({"grid": {}}, "grid", ["at least one key"]),
        ({"overrides": {"aspp_rates": "3,6"}}, "overrides.aspp_rates", ["'3,6'", "exactly three values"]),
        ({"overrides": {"optimizer_lr": "inf"}}, "overrides.optimizer_lr", ["'inf'", "finite"]),
        ({"grid": {"pretrained": [True]}, "variants": [{"name": "a"}]}, "", ["either 'grid' or 'variants'"]),
        ({"seeds": [0, 0]}, "seeds", ["distinct"]),
        ({"seeds": "zero"}, "seeds", ["'zero'"]),
        ({"item": 1.1}, "item", ["1.1"]),
        ({"report": {"figures": ["curves", "pie"]}}, "report.figures[1]", ["'pie'"]),
        ({"report": {"columns": ["optimizer_rate"]}}, "report.columns", ["did you mean 'optimizer_lr'"]),
        ({"rank_by": {"metric": "grader"}}, "rank_by.metric", ["val/"]),
        ({"base": "best of"}, "base", ["profile name, 'best of <entry id>' or '<entry id> variant <variant name>'"]),
    ],
)
def test_bad_entry_names_file_and_key(ablations, fields, key, words):
    path = write_entry(ablations, "problem1.bad", **fields)
    error = error_of(path)
    assert error.file == str(path)
    assert error.key == key
    message = str(error)
    assert message.startswith(str(path))
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(
    "fields, key, words",
    [
        ({"variants": [{"name": "a"}, {"name": "b", "overrides": {"aug_geom_scale_min": 1.5}}]},
         "variants[1].overrides", ["aug_geom_scale_min", "must not exceed"]),
        ({"overrides": {"decoder_se": True}}, "overrides", ["decoder_se need decoder_skip=true"]),
        ({"grid": {"decoder_skip_2x": [False, True]}}, "grid", ["decoder_skip_2x need decoder_skip=true"]),
        ({"overrides": {"distillation_decoder": "improved"}}, "overrides",
         ["only applies to model_name 'distillation'"]),
    ],
)
def test_a_bad_combination_fails_when_planned_naming_file_and_key(ablations, tmp_path, fields, key, words):
    # Each value is fine on its own, so the entry loads; its combination with the base is checked by the plan.
    path = write_entry(ablations, "problem1.bad", **fields)
    entry = load_entry(path)
    with pytest.raises(EntryError) as info:
        plan(entry, runs_dir=tmp_path)
    assert (info.value.file, info.value.key) == (str(path), key)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_a_combination_completed_by_the_base_is_valid(ablations, tmp_path):
    # decoder_se needs decoder_skip, which here comes from the base (a profile; a 'best of' winner alike).
    (ablations / "profiles" / "skip.yaml").write_text("decoder_skip: true\n")
    entry = load_entry(write_entry(ablations, "problem1.se", base="skip", grid={"decoder_se": [False, True]}))
    assert [run.config.decoder_se for run in plan(entry, runs_dir=tmp_path)] == [False, True]
    with pytest.raises(EntryError, match="decoder_se need decoder_skip=true"):
        plan(entry, "quick", runs_dir=tmp_path)


def test_a_combination_awaiting_the_winner_leaves_a_provisional_plan_without_runs(ablations, tmp_path):
    # Whether decoder_se is valid depends on the winner of problem1.skip (decoder_skip or not): until it
    # has run, `show` and dry runs say why no run can be listed instead of failing or guessing.
    write_entry(ablations, "problem1.skip", grid={"decoder_skip": [False, True]})
    entry = load_entry(write_entry(ablations, "problem1.se", base="best of problem1.skip",
                                   grid={"decoder_se": [False, True]}))
    provisional = make_plan(entry, runs_dir=tmp_path, allow_unresolved=True)
    assert provisional.runs == [] and not provisional.resolved
    reason = provisional.base.unresolved
    assert "problem1.skip" in reason and "decoder_se need decoder_skip=true" in reason


def test_unknown_profile_base(ablations):
    path = write_entry(ablations, "problem1.a", base="quik")
    error = error_of(ablations)
    assert (error.file, error.key) == (str(path), "base")
    assert "unknown profile 'quik'" in str(error) and "did you mean 'quick'" in str(error)


def test_unknown_best_of_entry(ablations):
    write_entry(ablations, "problem1.optimizer")
    path = write_entry(ablations, "problem1.lr", base="best of problem1.optimiser")
    error = error_of(ablations)
    assert (error.file, error.key) == (str(path), "base")
    assert "unknown entry 'problem1.optimiser'" in str(error) and "problem1.optimizer" in str(error)


def test_best_of_cycle(ablations):
    write_entry(ablations, "problem1.a", base="best of problem1.c")
    write_entry(ablations, "problem1.b", base="best of problem1.a")
    write_entry(ablations, "problem1.c", base="best of problem1.b")
    error = error_of(ablations)
    assert error.key == "base" and Path(error.file).parent == ablations
    assert "cycle" in str(error)
    for entry_id in ("problem1.a", "problem1.b", "problem1.c"):
        assert entry_id in str(error)


def test_not_yaml_and_not_a_mapping(ablations):
    broken = ablations / "problem1.broken.yaml"
    broken.write_text("question: [unclosed\n")
    assert "not valid YAML" in str(error_of(broken))
    listed = ablations / "problem1.list.yaml"
    listed.write_text("- a\n- b\n")
    assert "expected a mapping" in str(error_of(listed))


def test_cli_reports_a_bad_entry_and_exits_2(ablations, capsys):
    write_entry(ablations, "problem1.bad", overrides={"optimzer": "adam"})
    assert main(["list", "--ablations-dir", str(ablations)]) == 2
    err = capsys.readouterr().err
    assert "problem1.bad.yaml" in err and "overrides.optimzer" in err


# ------------------------------------------------------------------------------------------ JSON Schema


def test_committed_schema_is_up_to_date(capsys):
    committed = (ABLATIONS / "entry.schema.json").read_text()
    assert committed == entry_json_schema_text(), "regenerate with: mtl-ablate schema > ablations/entry.schema.json"
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == committed


def test_schema_accepts_the_shipped_entries_and_rejects_typos():
    schema = entry_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted(ABLATIONS.glob("*.yaml")):
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert errors == [], (path, errors)
    bad = {"question": "q", "item": "1", "base": "quick", "grid": {"optimizer_lr": [{"times": 2}, "x"]},
           "overrides": {"optimzer": "adam"}}
    messages = " ".join(e.message for e in validator.iter_errors(bad))
    assert "optimzer" in messages and "'x'" in messages
    assert json.loads(entry_json_schema_text()) == schema
