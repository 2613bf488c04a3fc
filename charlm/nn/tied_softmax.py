"""The full softmax with its weights tied to the input's word embedding.

``softmax(E h + b)``, where ``E`` (``[V, H]``) is the input side's word-embedding table itself
(Press & Wolf 2017; Inan et al. 2017): a word's output embedding is its input embedding, so the
layer's only parameters of its own are the biases. Every update of a word's output row then also
trains its input row and the other way round: for a word-level or ``both`` input this learns much
faster per epoch and saves ``V x H`` parameters. It needs a word embedding on the input
(``model.input: word`` or ``both``) of the core's size (``model.word_embed_dim`` =
``model.hidden_size``)::

    model:
      input: both
      word_embed_dim: 300
      hidden_size: 300
      output: {name: tied}
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from charlm.config.schema import PartOptions
from charlm.errors import CharlmError
from charlm.nn.fused_softmax import linear_cross_entropy
from charlm.nn.output import OutputLayer
from charlm.nn.registry import register_output


@dataclass
class TiedOptions(PartOptions):
    """``model.output: {name: tied}``: the output embeddings are the input's word embeddings."""

    name: str = "tied"

    def check(self, model) -> None:
        if model.input not in ("word", "both"):
            raise CharlmError(
                f"model.output: tied needs a word embedding to tie to, but model.input is {model.input!r}; "
                "set model.input to word or both, or use model.output: full"
            )
        if model.word_embed_dim != model.hidden_size:
            raise CharlmError(
                f"model.output: tied needs model.word_embed_dim ({model.word_embed_dim}) equal to "
                f"model.hidden_size ({model.hidden_size}); set one to the other"
            )


@register_output("tied", TiedOptions)
class TiedSoftmax(OutputLayer):
    """Args:
    embedding: the input side's word embedding (not a submodule of this layer: its weights
        belong to the input side, and are saved there once)."""

    def __init__(self, embedding: nn.Embedding):
        super().__init__()
        self.vocab_size, self.input_size = embedding.weight.shape
        self.__dict__["_embedding"] = embedding  # a plain attribute: the input side owns it
        self.bias = nn.Parameter(torch.zeros(self.vocab_size))

    @classmethod
    def from_config(cls, config, model) -> "TiedSoftmax":
        embedding = model.encoder.word_embedding
        if embedding is None or embedding.embedding_dim != model.core.output_size:
            raise ValueError("the tied output needs a word embedding of the core's output size")
        return cls(embedding)

    @property
    def weight(self) -> torch.Tensor:
        return self._embedding.weight

    def nll(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return linear_cross_entropy(hidden, self.weight, self.bias, targets)

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(nn.functional.linear(hidden, self.weight, self.bias).float(), dim=-1)
