"""A new recurrent core is one piece of code that registers itself with its options: here a toy GRU
core and its options (``model.core: {name: toy-gru, layers: 2}``), defined in this file alone, are
trained by `charlm train`, exported, loaded back and scored, and the training summary and the
benchmark describe it from the class itself."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import prepare_grammar_corpus
from torch import nn

from charlm.benchmark import flops_per_token
from charlm.checkpoint import load_model
from charlm.cli import main
from charlm.config import CONFIG_DIR, PartOptions, load_config
from charlm.corpus import load_corpus
from charlm.errors import CharlmError
from charlm.evaluate import perplexity
from charlm.model import describe_model
from charlm.nn import CORES, LSTMOptions, RecurrentCore, State, register_core


@dataclass
class ToyGRUOptions(PartOptions):
    name: str = "toy-gru"
    layers: int = 1
    """Stacked GRU layers."""


@register_core("toy-gru", ToyGRUOptions)
class ToyGRUCore(RecurrentCore):
    """``model.core.layers`` GRU layers of ``model.hidden_size``, dropout ``model.dropout`` on the output."""

    state_batch_dims = {"h": 1}

    def __init__(self, input_size: int, hidden_size: int, layers: int, dropout: float):
        super().__init__()
        self.input_size, self.output_size, self.layers = input_size, hidden_size, layers
        self.gru = nn.GRU(input_size, hidden_size, layers, batch_first=True)
        self.drop = nn.Dropout(dropout)

    @classmethod
    def from_config(cls, config, input_size: int) -> "ToyGRUCore":
        return cls(input_size, config.hidden_size, config.core.layers, config.dropout)

    @classmethod
    def describe(cls, config) -> str:
        return f"toy GRU {config.core.layers}x{config.hidden_size}"

    @classmethod
    def flops_per_token(cls, config, input_size: int) -> float:
        h = config.hidden_size
        return sum(2 * 3 * h * ((input_size if i == 0 else h) + h) for i in range(config.core.layers))

    def initial_state(self, batch_size: int) -> State:
        return {"h": self._zeros(self.layers, batch_size, self.output_size)}

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        y, h = self.gru(x, state["h"].to(x.dtype))
        return self.drop(y), {"h": h.float()}


TOY = [
    "model.core=toy-gru",
    "model.core.layers=2",
    "model.kernel_widths=[1,2,3]",
    "model.num_filters=[8,8,8]",
    "model.hidden_size=24",
    "train.batch_size=4",
    "train.seq_len=8",
    "train.max_epochs=8",
    "train.mixed_precision=no",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepare_grammar_corpus(tmp_path_factory.mktemp("corpus"), 200, 20)


def test_a_core_defined_in_a_test_trains_exports_loads_and_scores(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    tiny = str(CONFIG_DIR / "tiny.yaml")
    code = main(["train", "--config", tiny, "--data-dir", str(corpus), "--output-dir", str(run), *TOY])
    assert code == 0
    assert "toy GRU 2x24" in capsys.readouterr().out  # the summary line asks the class

    model, vocab = load_model(run / "best")
    assert isinstance(model.core, ToyGRUCore) and model.config.core == ToyGRUOptions(layers=2)
    _, splits, _ = load_corpus(corpus)
    result = perplexity(model, vocab, np.asarray(splits["test"]))
    assert 1.0 < result["perplexity"] < len(vocab)  # trained: better than uniform over the words

    config = model.config
    assert describe_model(config).startswith("char input, 1 highway, toy GRU 2x24")
    lstm = dataclasses.replace(config, core=LSTMOptions(layers=1))
    core_difference = ToyGRUCore.flops_per_token(config, config.input_size) - CORES["lstm"].flops_per_token(
        lstm, config.input_size
    )
    assert flops_per_token(config) - flops_per_token(lstm) == pytest.approx(core_difference)


def test_a_core_name_nobody_registered_is_a_one_line_error():
    with pytest.raises(CharlmError, match="model.core must be one of .*toy-gru"):
        load_config(CONFIG_DIR / "tiny.yaml", ["model.core=gru"])


def test_a_name_cannot_be_taken_twice():
    assert CORES["toy-gru"] is ToyGRUCore
    with pytest.raises(ValueError, match="already taken"):
        register_core("toy-gru")(type("Other", (RecurrentCore,), {}))
