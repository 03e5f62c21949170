"""Bad data: a truncated PNG, a JPEG of the wrong size, a label outside 0..18/255, an empty split and a
truncated test image. The integrity check names each file and its problem, and ``mtl-train`` fails with
that error in status.json -- one line, not a DataLoader worker's traceback -- before a single step
trained (the label is found by the first batch that reads it; everything else before training)."""

from __future__ import annotations

import json

import pytest

from faults.datasets import DAMAGES, damaged_copy
from faults.launcher import run_train
from faults.runs import FAULT_CONFIG, fault_args
from mtl.data.integrity import check_dataset
from mtl.data.integrity import main as integrity_main
from mtl.data.synthetic import SyntheticParams, build_synthetic

IDS = [d.name for d in DAMAGES]


@pytest.fixture(scope="module")
def sound_dataset(tmp_path_factory):
    params = SyntheticParams(num_train=FAULT_CONFIG["synthetic_num_train"], num_val=FAULT_CONFIG["synthetic_num_val"],
                             num_test=FAULT_CONFIG["synthetic_num_test"], height=FAULT_CONFIG["synthetic_height"],
                             width=FAULT_CONFIG["synthetic_width"])
    root = build_synthetic(tmp_path_factory.mktemp("data") / "sound", params)
    assert check_dataset(root) == []
    return root


@pytest.mark.parametrize("damage", DAMAGES, ids=IDS)
def test_integrity_check_names_the_file_and_the_problem(sound_dataset, tmp_path, damage, capsys):
    root = damaged_copy(sound_dataset, tmp_path / "data", damage)
    problems = check_dataset(root)
    matching = [p for p in problems if damage.named_in(p, root)]
    assert matching, problems
    assert all(word in matching[0] for word in damage.words), matching[0]
    assert integrity_main([str(root)]) == 1
    assert damage.named_in(capsys.readouterr().out, root)


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGES, ids=IDS)
def test_training_on_it_fails_early_naming_the_file(sound_dataset, tmp_path, damage):
    root = damaged_copy(sound_dataset, tmp_path / "data", damage)
    run_dir = tmp_path / "run"
    # Worker processes, as real runs use: an error raised in one must still reach status.json plainly.
    code, _ = run_train([*fault_args(workers=1, workers_validation=1), "--dataset=miniscapes",
                         f"--dataset_root={root}", f"--log_dir={run_dir}"], tmp_path / "train.log")
    assert code == 1
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and status["step"] == 0
    error = status["error"]
    assert error.startswith("DatasetError: ") and damage.named_in(error, root), error
    assert all(word in error for word in damage.words), error
    assert "Traceback" not in error and "\n" not in error, error
    assert not (run_dir / "checkpoints").exists()  # not one step trained
