"""The config: defaults, YAML with base: inheritance, overrides, each part's own options, and the
flat keys of charlm 0.1 (old YAML files, old exported models, old runs)."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from helpers_model import trained  # noqa: F401  (a fixture)

from charlm.checkpoint import load_model
from charlm.config import (
    CONFIG_DIR,
    ModelConfig,
    describe_fields,
    load_config,
    model_config_from_json,
    resolve_config_path,
    shipped_configs,
)
from charlm.config.legacy import FLAT_KEYS
from charlm.errors import CharlmError
from charlm.nn import CORES, OUTPUTS, AdaptiveOptions, LSTMOptions, RHNOptions
from charlm.state import check_same_model

TINY = CONFIG_DIR / "tiny.yaml"
OLD_EXPORT = Path(__file__).parents[1] / "data" / "charlm-0.1-config.json"  # written by charlm 0.1.0


def test_config_overrides_and_unknown_keys(tmp_path):
    config = load_config(
        TINY, ["train.max_epochs=7", "dropout=0.1", "model.kernel_widths=[1, 2]", "model.num_filters=[3, 4]"]
    )
    assert config.train.max_epochs == 7 and config.model.dropout == 0.1 and config.model.kernel_widths == [1, 2]
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hiden_size: 3\n")
    with pytest.raises(Exception, match="did you mean model.hidden_size"):
        load_config(bad)
    with pytest.raises(Exception, match="must be of type int"):
        load_config(TINY, ["train.batch_size=big"])


@pytest.mark.parametrize("name", shipped_configs())
def test_every_shipped_config_loads(name):
    """Every config in charlm/configs/ parses and validates (unknown keys and bad values are errors)."""
    config = load_config(name)
    assert config.model.hidden_size > 0 and config.train.max_epochs > 0


def test_config_by_shipped_name_or_path(tmp_path, monkeypatch):
    assert {"tiny", "ptb-char-small", "ptb-char-large", "ptb-word-small"} <= set(shipped_configs())
    monkeypatch.chdir(tmp_path)  # not the repository: names must not depend on the working directory
    for ref in ("ptb-char-small", "ptb-char-small.yaml", "configs/ptb-char-small.yaml"):
        assert resolve_config_path(ref) == CONFIG_DIR / "ptb-char-small.yaml", ref
    assert load_config("ptb-char-small").model.hidden_size == 300
    own = tmp_path / "configs" / "tiny.yaml"  # a file that exists always wins over a shipped name
    own.parent.mkdir()
    own.write_text("model:\n  hidden_size: 7\n")
    assert resolve_config_path("configs/tiny.yaml") == Path("configs/tiny.yaml")
    assert load_config(own).model.hidden_size == 7
    with pytest.raises(CharlmError, match=r"unknown config 'ptb-char-smal': .*ptb-char-small, .*tiny") as err:
        load_config("ptb-char-smal")
    assert "\n" not in str(err.value)
    with pytest.raises(CharlmError, match=r"config file elsewhere/tiny.yaml not found; .*shipped configs: .*tiny"):
        load_config("elsewhere/tiny.yaml")  # a path outside configs/ is never swapped for a shipped file


def test_each_part_reads_its_own_options_from_yaml_and_overrides(tmp_path):
    own = tmp_path / "own.yaml"
    own.write_text("model:\n  core:\n    name: rhn\n    depth: 3\n  output: adaptive\n")
    config = load_config(own, ["model.core.state_dropout=0.2", "model.output.cutoffs=[20]"]).model
    assert config.core == RHNOptions(depth=3, state_dropout=0.2)
    assert config.output == AdaptiveOptions(cutoffs=[20])
    assert load_config(TINY, ["model.core=rhn"]).model.core == RHNOptions()  # a name alone: its defaults
    with pytest.raises(CharlmError, match=r"unknown config key 'model.core.depth' of core 'lstm'.*model.core.layers"):
        load_config(TINY, ["model.core.depth=4"])  # tiny's core is an LSTM: depth is not one of its options
    with pytest.raises(CharlmError, match=r"did you mean model.core.depth"):
        load_config(TINY, ["model.core=rhn", "model.core.deph=4"])
    with pytest.raises(CharlmError, match="model.core.depth must be at least 1"):
        load_config(TINY, ["model.core=rhn", "model.core.depth=0"])
    with pytest.raises(CharlmError, match="model.core must be one of lstm, rhn"):
        load_config(TINY, ["model.core=gru"])


def test_help_lists_every_parts_options_under_its_name():
    text = describe_fields()
    assert "model.core.depth (core rhn, default 2)" in text
    assert "model.core.layers (core lstm, default 2)" in text
    assert "model.output.cutoffs (output adaptive, default [])" in text
    assert "model.core (default 'lstm')" in text


def test_a_config_is_its_base_plus_its_differences(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(
        "model:\n  core: {name: rhn, depth: 4, state_dropout: 0.25}\n  hidden_size: 40\ntrain:\n  lr: 0.5\n"
    )
    child = tmp_path / "child.yaml"
    child.write_text("base: base.yaml\nmodel:\n  core: {depth: 8}\ntrain:\n  max_epochs: 3\n")
    config = load_config(child)
    assert config.model.core == RHNOptions(depth=8, state_dropout=0.25)  # same part: options merge
    assert (config.model.hidden_size, config.train.lr, config.train.max_epochs) == (40, 0.5, 3)
    other = tmp_path / "other.yaml"
    other.write_text("base: base.yaml\nmodel:\n  core: lstm\n")
    assert load_config(other).model.core == LSTMOptions()  # another part: the base's options do not apply
    shipped = tmp_path / "shipped.yaml"
    shipped.write_text("base: ptb-char-small-rhn-depth4\ntrain:\n  max_epochs: 2\n")
    assert load_config(shipped).model == load_config("ptb-char-small-rhn-depth4").model
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(CharlmError, match="name each other as base"):
        load_config(loop)


def test_shipped_configs_differ_from_their_base_only_where_they_say():
    """The depth-8 RHN is the depth-2 one with depth 8 and state 300; nothing else."""
    deep, base = load_config("ptb-char-small-rhn-depth8").to_dict(), load_config("ptb-char-small-rhn").to_dict()
    base["model"]["core"]["depth"], base["model"]["hidden_size"] = 8, 300
    assert deep == base


def test_a_charlm_0_1_export_config_upgrades_to_the_same_model():
    old = model_config_from_json(OLD_EXPORT)  # flat keys: core: rhn, rhn_depth: 4, output_num_filters...
    assert old == load_config("ptb-char-small-rhn-char-output").model


def test_old_flat_yaml_keys_still_load_and_mean_the_same(tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text(
        "model:\n  core: rhn\n  rhn_depth: 4\n  state_dropout: 0.25\n  output: adaptive\n  adaptive_div_value: 2.0\n"
    )
    config = load_config(flat).model
    assert config.core == RHNOptions(depth=4, state_dropout=0.25) and config.output == AdaptiveOptions(div_value=2.0)
    assert load_config(TINY, ["model.lstm_layers=3"]).model.core.layers == 3  # an old override too
    meaningless = tmp_path / "meaningless.yaml"
    meaningless.write_text("model:\n  core: lstm\n  rhn_depth: 4\n")  # an option of a part not used
    with pytest.raises(CharlmError, match="model.rhn_depth is an option of core rhn, but model.core is lstm"):
        load_config(meaningless)
    assert load_config(flat, ["model.core.depth=8"]).model.core.depth == 8  # the command line wins
    assert load_config("ptb-char-small-rhn-depth4", ["model.rhn_depth=8"]).model.core.depth == 8
    twice = tmp_path / "twice.yaml"
    twice.write_text("model:\n  core: {name: rhn, depth: 2}\n  rhn_depth: 4\n")
    with pytest.raises(CharlmError, match="one option given twice"):
        load_config(twice)


def flatten_like_charlm_0_1(model: dict) -> dict:
    """The ``model`` section as charlm 0.1 wrote it: every part's options flat, with prefixes."""
    flat = {key: value for key, value in model.items() if key not in ("core", "output")}
    flat["core"], flat["output"] = model["core"]["name"], model["output"]["name"]
    for key, (kind, name, option) in FLAT_KEYS.items():
        part_class = (CORES if kind == "core" else OUTPUTS)[name]
        flat[key] = model[kind][option] if model[kind]["name"] == name else getattr(part_class.Options(), option)
    return flat


def test_a_model_exported_by_charlm_0_1_loads_with_the_same_weights(trained, tmp_path):
    old = tmp_path / "old-export"
    old.mkdir()
    for path in trained.model_dir.iterdir():
        (old / path.name).write_bytes(path.read_bytes())
    record = json.loads((old / "config.json").read_text())
    record["model"] = flatten_like_charlm_0_1(record["model"])
    (old / "config.json").write_text(json.dumps(record))
    new_model, _ = load_model(trained.model_dir)
    old_model, _ = load_model(old)
    assert old_model.config == new_model.config
    for (name, a), (_, b) in zip(new_model.state_dict().items(), old_model.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_model_config_built_in_python_takes_names_or_options():
    assert ModelConfig(core="rhn").core == RHNOptions()
    assert dataclasses.replace(ModelConfig(), core=RHNOptions(depth=3)).core.depth == 3
    with pytest.raises(CharlmError, match="takes RHNOptions, not LSTMOptions"):
        ModelConfig(core=dataclasses.replace(LSTMOptions(), name="rhn"))


def test_a_run_started_by_charlm_0_1_resumes_with_its_flat_config(tmp_path):
    """``--resume`` compares the run's saved config.json (flat keys) with the model asked for."""
    record = json.loads(OLD_EXPORT.read_text())  # a run's config.json: its model and train sections
    (tmp_path / "config.json").write_text(json.dumps({"model": record["model"], "train": record["train"]}))
    asked = load_config("ptb-char-small-rhn-char-output").model
    check_same_model(tmp_path / "config.json", asked)  # the same model: no error
    with pytest.raises(CharlmError, match=r"trained with model.core.depth=4, this command asks for 8"):
        check_same_model(tmp_path / "config.json", dataclasses.replace(asked, core=RHNOptions(depth=8)))
