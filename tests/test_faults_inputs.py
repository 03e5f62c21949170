"""Bad input fuzzing: config values, command lines and ablation entry documents.

Whatever a user types, the answer is a ``ConfigError`` (config and command line) or an ``EntryError``
(entry files) whose message names the key at fault -- never another exception and its traceback.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtl.ablate.entry import EntryError, EntryFile, Scaled, load_entry, parse_entry
from mtl.config import FIELD_NAMES, Config, ConfigError, cli_args, config_from_cli, make_config
from mtl.partial_config import ConfigOverrides

FUZZ = settings(max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# Values as YAML, a command line or Python can hand over: scalars of every type, with edge cases, and
# small nested lists and mappings.
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["none", "null", "true", "0", "-1", "1e-4", "1e400", "nan", "inf", "3,6,9", "[3, 6, 9]", "[]", "",
                     "[1,", "{", "sgd", "adam", "auto", "resnet34", "0x10", "1_000"]),
    st.dates(min_value=datetime.date(1990, 1, 1), max_value=datetime.date(2100, 1, 1)),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)
config_keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=20))


def _names_a_key(message: str, keys) -> bool:
    return any(str(key) in message or repr(str(key)) in message for key in keys)


@FUZZ
@given(st.dictionaries(config_keys, values, max_size=4))
def test_make_config_answers_any_mapping_with_a_config_or_a_config_error(mapping):
    try:
        config = make_config(mapping)
    except ConfigError as exc:
        assert _names_a_key(str(exc), mapping), str(exc)
        return
    # Accepted values survive the round trip through the command line, as a W&B agent passes them.
    again = config_from_cli(cli_args(config))
    assert again.config_hash() == config.config_hash()


@FUZZ
@given(st.sampled_from(FIELD_NAMES), values)
def test_a_bad_value_names_its_key(key, value):
    try:
        make_config({key: value})
    except ConfigError as exc:
        assert repr(key) in str(exc) or key in str(exc), str(exc)


tokens = st.one_of(
    st.builds(lambda k, v: f"--{k}={v}", config_keys, st.text(max_size=10)),
    st.builds(lambda k: f"--{k}", config_keys),
    st.sampled_from(FIELD_NAMES).map(lambda k: f"--{k}"),
    st.text(max_size=10),
    st.sampled_from(["--", "-", "--=", "--=1", "--config", "--config=", "--config=/nonexistent.yaml", "none"]),
)


@FUZZ
@given(st.lists(tokens, max_size=6))
def test_any_command_line_gives_a_config_or_a_config_error(argv):
    try:
        config_from_cli(argv)
    except ConfigError as exc:
        assert str(exc).strip()


# Bugs in mtl/config.py that the fuzzing found (now fixed; these keep them fixed).


@pytest.mark.parametrize("target", ["folder", "binary"])
def test_a_config_file_that_is_no_text_file_is_a_config_error(target, tmp_path):
    """load_yaml turns only a missing file and bad YAML into ConfigError; a folder or a binary file
    (``--config weights.pt``) escapes with a traceback from mtl-train."""
    binary = tmp_path / "weights.pt"
    binary.write_bytes(b"PK\x03\x04\xd0\xff\xfe binary")
    with pytest.raises(ConfigError, match="config file"):
        config_from_cli([f"--config={tmp_path if target == 'folder' else binary}"])


@pytest.mark.parametrize("key", ["aspp_rates", "wandb_tags"])
def test_half_a_yaml_list_is_a_config_error(key):
    """``--aspp_rates=[3,6`` (a typo) escapes as a yaml ParserError instead of naming the key."""
    with pytest.raises(ConfigError, match=key):
        make_config({key: "[3,6"})


@pytest.mark.parametrize("key", ["optimizer_lr", "loss_weight_semseg", "loss_weight_depth", "aug_geom_scale_max"])
def test_an_infinite_float_is_refused(key):
    """'nan' is refused (by the bounds), but 'inf' passes for the learning rate, loss weights and scale
    bounds, and a run with it can only diverge or fail later."""
    try:
        make_config({key: "inf"})
    except ConfigError as exc:
        assert key in str(exc)
    else:
        raise AssertionError(f"{key}=inf accepted")


# ------------------------------------------------------------------------------------ entry documents
@pytest.mark.parametrize("key", ["Scaled", "any"])
def test_an_unknown_key_named_like_a_union_member_is_an_entry_error(key):
    with pytest.raises(EntryError, match=key):
        parse_entry({"question": "q", "item": "1.1", "base": "quick", key: 1}, Path("problem1.x.yaml"))


ENTRY_KEYS = tuple(EntryFile.model_fields)
REQUIRED = ("question", "item", "base")
entry_values = st.one_of(
    values,
    st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8)), values, max_size=3),
    st.dictionaries(st.sampled_from(FIELD_NAMES), st.lists(st.one_of(values, st.fixed_dictionaries(
        {"times": st.one_of(st.floats(allow_nan=True), st.integers(), st.text(max_size=4))})), max_size=3), max_size=2),
    st.lists(st.fixed_dictionaries({"name": st.text(max_size=10)}, optional={
        "overrides": st.dictionaries(st.sampled_from(FIELD_NAMES), values, max_size=2), "extra": values}), max_size=3),
)
valid_start = st.fixed_dictionaries({"question": st.just("Does it help?"), "item": st.just("1.1"),
                                     "base": st.sampled_from(["quick", "quick", "best of problem1.lr", "best of",
                                                              "Quick x"])})


@st.composite
def entry_documents(draw):
    doc = draw(st.one_of(valid_start, valid_start, valid_start, st.just({})))
    changes = draw(st.dictionaries(st.one_of(st.sampled_from(ENTRY_KEYS), st.text(max_size=8)), entry_values,
                                   max_size=3))
    doc.update(changes)
    dropped = draw(st.sampled_from([None] * 6 + list(REQUIRED)))
    doc.pop(dropped, None)
    return doc


@FUZZ
@given(entry_documents())
def test_any_entry_document_is_an_entry_or_an_entry_error_naming_the_key(doc):
    path = Path("ablations") / "problem1.fuzz.yaml"  # parsed from memory: the file name gives the entry id
    try:
        entry = parse_entry(doc, path)
    except EntryError as exc:
        assert exc.file == str(path) and str(path) in str(exc)
        candidates = set(map(str, doc)) | set(REQUIRED) | {"grid", "variants"}
        assert _names_a_key(str(exc), candidates), str(exc)
        return
    # An accepted entry's config values are valid values of their keys (they validate to themselves);
    # only their combination with a base, the Config's cross-key rules, is left to the plan.
    grid_values = [{k: v} for k, vs in (entry.grid or {}).items() for v in vs if not isinstance(v, Scaled)]
    for values_ in [entry.overrides, *grid_values] + [v.overrides for v in entry.variants or []]:
        assert ConfigOverrides.model_validate(values_).model_dump(exclude_unset=True) == values_
        try:
            assert isinstance(make_config(values_), Config)
        except ConfigError as exc:
            assert all(line.strip().startswith("config: ") for line in str(exc).splitlines()[1:]), str(exc)


@FUZZ
@given(st.text(max_size=200))
def test_any_entry_file_text_is_an_entry_or_an_entry_error(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "problem1.text.yaml"
    path.write_text(text)
    try:
        load_entry(path)
    except EntryError as exc:
        assert str(path) in str(exc)


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELD_NAMES), values, min_size=1, max_size=3).map(
    lambda d: yaml.safe_dump(d, default_flow_style=True)))
def test_entry_overrides_written_as_yaml_fail_naming_the_key(tmp_path_factory, overrides):
    path = tmp_path_factory.getbasetemp() / "problem1.yaml_overrides.yaml"
    path.write_text(f"question: q\nitem: '1.1'\nbase: quick\noverrides: {overrides}\n")
    try:
        load_entry(path)
    except EntryError as exc:
        assert "overrides" in exc.key, str(exc)
