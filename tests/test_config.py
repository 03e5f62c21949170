import pytest
import yaml

from mtl.config import Config, ConfigError, cli_args, config_from_cli, load_yaml, make_config
from support import ABLATIONS


def test_defaults_are_the_template_baseline():
    cfg = Config()
    optimizer = (cfg.optimizer, cfg.optimizer_lr, cfg.optimizer_momentum, cfg.optimizer_weight_decay)
    assert optimizer == ("sgd", 0.01, 0.9, 1e-4)
    assert (cfg.num_epochs, cfg.batch_size, cfg.batch_size_validation, cfg.aug_input_crop_size) == (16, 4, 8, 256)
    assert (cfg.loss_weight_semseg, cfg.loss_weight_depth) == (0.5, 0.5)
    assert cfg.dilation_flags == (False, False, False) and cfg.output_stride == 32
    assert not cfg.aspp and not cfg.decoder_skip and not cfg.pretrained
    assert (cfg.workers, cfg.workers_validation) == (16, 4)


def test_both_cli_forms_and_bare_bool_flag():
    cfg = config_from_cli(["--optimizer", "adam", "--optimizer_lr=1e-4", "--aspp", "--dilation_layer4=true",
                           "--aspp_rates=6,12,18"])
    assert cfg.optimizer == "adam" and cfg.optimizer_lr == pytest.approx(1e-4)
    assert cfg.aspp and cfg.dilation_layer4 and cfg.output_stride == 16 and cfg.aspp_rates == (6, 12, 18)


def test_cli_args_round_trip_every_key():
    cfg = make_config(optimizer="adam", optimizer_lr=3e-4, wandb_tags=["problem1"], aspp_rates=[3, 6, 9])
    assert config_from_cli(cli_args(cfg)) == cfg


def test_yaml_then_cli_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"batch_size": 8, "optimizer_lr": "1e-3"}))
    cfg = config_from_cli(["--config", str(path), "--batch_size=2"])
    assert cfg.batch_size == 2 and cfg.optimizer_lr == pytest.approx(1e-3)


def test_unknown_key_names_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'optimzer_lr'.*did you mean 'optimizer_lr'"):
        config_from_cli(["--optimzer_lr=0.1"])


def test_bad_value_names_key_value_and_expectation():
    with pytest.raises(ConfigError) as info:
        config_from_cli(["--optimizer=adamw"])
    assert "'optimizer'" in str(info.value) and "'adamw'" in str(info.value) and "'sgd'" in str(info.value)
    with pytest.raises(ConfigError, match=r"'batch_size' got 'four'.*integer"):
        config_from_cli(["--batch_size", "four"])
    with pytest.raises(ConfigError, match=r"aug_input_crop_size.*multiple of 32"):
        make_config(aug_input_crop_size=100)
    with pytest.raises(ConfigError, match=r"'optimizer_lr' got -1"):
        make_config(optimizer_lr=-1)


def test_yaml_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("batch_sise: 4\n")
    with pytest.raises(ConfigError, match=r"batch_sise.*bad.yaml.*did you mean 'batch_size'"):
        load_yaml(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_yaml(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")


def test_missing_value_is_an_error():
    with pytest.raises(ConfigError, match="'batch_size' has no value"):
        config_from_cli(["--batch_size"])


def test_hash_ignores_run_invariant_keys_only():
    base = Config()
    assert base.config_hash() == base.replace(log_dir="elsewhere", workers=2, device="cpu").config_hash()
    assert base.config_hash() != base.replace(optimizer_lr=0.02).config_hash()


def test_keys_added_later_leave_every_earlier_hash_unchanged_at_their_defaults():
    # Hashes of these configs before tasks, loss_weighting and dwa_temperature existed: their run
    # directories must still be found.
    profiles = {name: load_yaml(ABLATIONS / "profiles" / f"{name}.yaml", extra_keys=("slurm", "racing"))
                for name in ("quick", "full", "race")}
    for values in profiles.values():
        values.pop("slurm", None)
        values.pop("racing", None)
    assert make_config().config_hash() == "ed79dedc"
    assert {name: make_config(values).config_hash() for name, values in profiles.items()} == {
        "quick": "e28acbb3", "full": "39871986", "race": "91bfa854"}
    assert make_config(model_name="branched").config_hash() == "849b19f8"
    # Set to anything else, each is part of the identity like every key.
    assert make_config(tasks="semseg").config_hash() != make_config().config_hash()
    assert make_config(loss_weighting="dwa").config_hash() != make_config(loss_weighting="dwa",
                                                                          dwa_temperature=1.0).config_hash()
