"""A character-aware output layer: the "CNN softmax" of Jozefowicz et al. (2016).

The output embedding of word w is computed from its spelling instead of being a free row of a
``[V, H]`` matrix::

    [e_w; b_w] = P f(spelling_w) + Q c_w          logit_w = e_w . h + b_w + a_w

where f is a character encoder (the output's own char-CNN, run over each word's characters only,
or the input's char-CNN and highway layers: ``model.output.share_encoder``), P a projection to the
core's size plus one (the word's bias, so that the bias too comes from the spelling), and c_w an optional small per-word
correction (``model.output.correction_dim``; Q projects it) for what the spelling cannot say, and
a_w an optional free per-word bias (``model.output.word_bias``) for the one thing a spelling
cannot say at all: how frequent the word is. Without a_w the unigram distribution has to be
carried by ``e_w . h`` along some direction of h, which the dropout on h makes noisy: training
perplexity then climbs far above validation perplexity (docs/model-parts.md).
Input and output are so tied through the spelling, the output costs ``O(filters x H)``
parameters instead of ``O(V x H)``, and any word, in the vocabulary or not, has a logit:

:meth:`CharSoftmax.spelling_logits` (an unseen word has no correction, and as free bias the mean
of the rarest tenth of the vocabulary's: it is taken to be as rare as those).

The table of every word's ``[e_w; b_w]`` is computed once per training forward pass (its gradient
reaches the encoder), and once for a whole scoring or sampling run under :meth:`frozen`. In a
training step of a data-parallel run each process encodes only its share of the vocabulary's
spellings and the shares are exchanged (:mod:`charlm.nn.shards`), so the table's cost per process
falls with the number of processes instead of being paid whole by each.

The table is kept centred: its mean over the vocabulary is subtracted (from the features and the
corrections before the projection, from the free biases), which changes no probability (a
vector added to every word's ``[e_w; b_w]`` adds the same number to every logit). Without it the
common part grows steadily under Adam (``|mean e|`` 6.7 -> 17.9 over updates 100-400 while
the spread around it stays at 2.4-2.9: it has no gradient of its own, and it moves as a side
effect of the updates to P), and once the logits carry an offset of some hundreds, bf16 has
nothing left for the differences between words (its spacing is 2 at 300): the training loss,
computed in bf16, then climbs while the float32 validation still improves (docs/model-parts.md).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from charlm.config.schema import PartOptions
from charlm.errors import CharlmError
from charlm.nn.encoder import SPELLING_BLOCK, CharCNN
from charlm.nn.fused_softmax import linear_cross_entropy
from charlm.nn.output import OutputLayer
from charlm.nn.registry import register_output
from charlm.nn.shards import gather_shards, my_share, shard_count


class _Table(NamedTuple):
    """Every vocabulary word's centred output embedding and bias, and the vocabulary means that
    were subtracted (what a spelled word's row must subtract too)."""

    weight: torch.Tensor  # [V, H]
    bias: torch.Tensor  # [V]
    feature_mean: torch.Tensor  # [feature_size]
    correction_mean: torch.Tensor | None  # [correction_dim]
    free_bias_mean: torch.Tensor | None  # []


@dataclass
class CharOutputOptions(PartOptions):
    """``model.output: {name: char, ...}``: output embeddings computed from spellings."""

    name: str = "char"

    share_encoder: bool = False
    """Read spellings through the input's char-CNN and highway layers (true) or through a char-CNN
    of the output's own (false)."""

    num_filters: list[int] = field(default_factory=list)
    """With its own char-CNN: feature maps per kernel width (empty: model.num_filters)."""

    correction_dim: int = 0
    """Size of a per-word correction vector added to the spelling's embedding (Jozefowicz et al.),
    for what the spelling cannot tell (0: none)."""

    word_bias: bool = True
    """A free bias per word on top of the one from the spelling, for the word's frequency, which a
    spelling cannot tell (unseen words scored by spelling get the mean bias of the rarest tenth of
    the vocabulary)."""

    def check(self, model) -> None:
        if self.share_encoder and model.input != "char":
            raise CharlmError(
                "model.output.share_encoder needs model.input: char (the shared encoder reads "
                "spellings only); set it to false to give the output its own char-CNN"
            )
        if self.num_filters and len(self.num_filters) != len(model.kernel_widths):
            raise CharlmError(
                f"model.output.num_filters ({len(self.num_filters)} entries) must have one "
                f"entry per kernel width ({len(model.kernel_widths)}), or be empty"
            )
        if self.num_filters and min(self.num_filters) < 1:
            raise CharlmError("model.output.num_filters must be positive")
        if self.correction_dim < 0:
            raise CharlmError(f"model.output.correction_dim must be >= 0, got {self.correction_dim}")


@register_output("char", CharOutputOptions)
class CharSoftmax(OutputLayer):
    """Args:
    hidden_size: size of the core's outputs.
    spellings: ``[V, L]`` character ids of every vocabulary word.
    char_cnn: the output's own encoder (``None`` when ``shared`` is given).
    shared: a function ``chars [N, L] -> [N, feature_size]`` of the input side (not a
        submodule of this layer: its weights belong to the input side).
    feature_size: the encoder's output size.
    correction_dim: size of the per-word correction (0: none).
    word_bias: a free bias per word, added to the one from the spelling.
    """

    def __init__(
        self,
        hidden_size: int,
        spellings: torch.Tensor,
        feature_size: int,
        *,
        char_cnn: CharCNN | None = None,
        shared: Callable[[torch.Tensor], torch.Tensor] | None = None,
        correction_dim: int = 0,
        word_bias: bool = False,
    ):
        super().__init__()
        if (char_cnn is None) == (shared is None):
            raise ValueError("give the output layer either its own char_cnn or a shared encoder")
        self.input_size, self.vocab_size = hidden_size, spellings.size(0)
        self.char_cnn = char_cnn
        self.__dict__["_shared"] = shared  # a plain attribute: the input side owns those weights
        self.register_buffer("spellings", spellings.long().clone(), persistent=False)
        # [P_e; p_b]; no bias: a vector added to every word's row changes no probability
        self.projection = nn.Linear(feature_size, hidden_size + 1, bias=False)
        self.correction = nn.Embedding(self.vocab_size, correction_dim) if correction_dim else None
        self.correction_projection = nn.Linear(correction_dim, hidden_size + 1, bias=False) if correction_dim else None
        self.word_bias = nn.Parameter(torch.zeros(self.vocab_size)) if word_bias else None
        self._frozen_table: _Table | None = None

    def initialise_after_uniform(self) -> None:
        """The output's own char-CNN starts from PyTorch's initialisation (embedding N(0, 1),
        convolutions Kaiming-uniform), not the paper's U(-0.05, 0.05). Under the paper's, every
        spelling gives nearly the same features (their spread across words is 0.005, the output
        embeddings' 0.004, a seventh of a full softmax's free rows), so every word starts with the
        same output embedding, the core gets no signal to tell words apart and training stalls at
        unigram perplexity; under PyTorch's the features spread 0.28 across words and it learns
        (docs/model-parts.md). A shared encoder keeps the input side's initialisation."""
        if self.char_cnn is not None:
            self.char_cnn.embedding.reset_parameters()
            for conv in self.char_cnn.convs:
                conv.reset_parameters()

    @classmethod
    def from_config(cls, config, model) -> "CharSoftmax":
        hidden, options = model.core.output_size, config.output
        if options.share_encoder:
            return cls(
                hidden,
                model.encoder.spellings,
                model.config.input_size,
                shared=model.encode_spellings,
                correction_dim=options.correction_dim,
                word_bias=options.word_bias,
            )
        filters = options.num_filters or config.num_filters
        cnn = CharCNN(config.char_vocab_size, config.char_embed_dim, config.kernel_widths, filters)
        return cls(
            hidden,
            model.encoder.spellings,
            cnn.output_size,
            char_cnn=cnn,
            correction_dim=options.correction_dim,
            word_bias=options.word_bias,
        )

    def spelling_features(self, chars: torch.Tensor) -> torch.Tensor:
        """Character ids ``[N, L]`` -> encoder features ``[N, feature_size]``."""
        return self._shared(chars) if self.char_cnn is None else self.char_cnn.forward_trimmed(chars)

    def word_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every vocabulary word's output embedding ``[V, H]`` and bias ``[V]`` (centred)."""
        table = self._table()
        return table.weight, table.bias

    def _table(self) -> _Table:
        if self._frozen_table is not None:
            return self._frozen_table
        features = self._vocabulary_features()
        feature_mean = features.mean(0)
        corrections = None if self.correction is None else self.correction.weight
        correction_mean = None if corrections is None else corrections.mean(0)
        free_bias_mean = None if self.word_bias is None else self.word_bias.mean()
        rows = self._centred_rows(features - feature_mean, corrections, correction_mean, self.word_bias, free_bias_mean)
        return _Table(rows[:, :-1], rows[:, -1], feature_mean, correction_mean, free_bias_mean)

    def _vocabulary_features(self) -> torch.Tensor:
        """Every vocabulary word's encoder features ``[V, feature_size]``; in a data-parallel
        training step, this process's share of them, gathered with the others'."""
        sharded = self.training and torch.is_grad_enabled() and shard_count() > 1
        spellings = self.spellings[my_share(self.vocab_size)] if sharded else self.spellings
        # In blocks only without gradients (scoring): with them autograd keeps every block's
        # intermediates anyway, and one call makes fewer, larger matrix products (the training
        # step 1.3x faster on two threads: docs/model-parts.md).
        blocks = spellings.split(SPELLING_BLOCK) if not torch.is_grad_enabled() else [spellings]
        features = torch.cat([self.spelling_features(block) for block in blocks])
        return gather_shards(features, self.vocab_size) if sharded else features

    def _centred_rows(self, features, corrections, correction_mean, free_bias, free_bias_mean) -> torch.Tensor:
        """``[e; b]`` rows ``[N, H + 1]`` from centred features; ``corrections`` ``None`` for a
        word without one (a zero correction, so minus the mean); ``free_bias`` per row or one value."""
        rows = F.linear(features, self.projection.weight)
        if self.correction is not None:
            centred = -correction_mean if corrections is None else corrections - correction_mean
            rows = rows + self.correction_projection(centred)
        if self.word_bias is None:
            return rows
        return torch.cat([rows[:, :-1], rows[:, -1:] + (free_bias - free_bias_mean).reshape(-1, 1)], dim=1)

    def nll(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weight, bias = self.word_table()
        return linear_cross_entropy(hidden, weight, bias, targets)

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        weight, bias = self.word_table()
        return torch.log_softmax(torch.addmm(bias, hidden, weight.t()).float(), dim=-1)

    def spelling_logits(self, hidden: torch.Tensor, chars: torch.Tensor) -> torch.Tensor:
        """The logit ``e_w . h + b_w`` of the word spelled by row n of ``chars``, under the state
        ``hidden[n]``: ``[N, H]``, ``[N, L]`` -> ``[N]`` float32 (no per-word correction; the free
        bias of an unseen word, if the layer has free biases: the mean of the rarest tenth of the
        vocabulary's, whose words are sorted by frequency)."""
        vocabulary = self._table()  # its means centre this row as they centre the vocabulary's
        rarest = None if self.word_bias is None else self.word_bias[-max(1, self.vocab_size // 10) :].mean()
        rows = self._centred_rows(
            self.spelling_features(chars) - vocabulary.feature_mean,
            None,
            vocabulary.correction_mean,
            rarest,
            vocabulary.free_bias_mean,
        )  # [N, H + 1]
        return ((rows[:, :-1] * hidden).sum(-1) + rows[:, -1]).float()

    def spelling_log_probs(self, hidden: torch.Tensor, chars: torch.Tensor, replaces: int) -> torch.Tensor:
        """Log-probability of the word spelled by row n of ``chars`` under ``hidden[n]``, the word
        taking the place of vocabulary entry ``replaces`` (``<unk>``) in the normalisation:
        ``[N, H]``, ``[N, L]`` -> ``[N]`` float32. A distribution over the vocabulary with
        ``<unk>`` swapped for that one word."""
        with self.frozen():  # one table for both
            weight, bias = self.word_table()
            logits = torch.addmm(bias, hidden, weight.t()).float()  # [N, V]
            spelled = self.spelling_logits(hidden, chars)  # [N]
        logits[:, replaces] = spelled
        return spelled - torch.logsumexp(logits, dim=-1)

    @contextlib.contextmanager
    def frozen(self):
        if self._frozen_table is not None:  # already inside: the outer one owns the table
            yield
            return
        with torch.no_grad():
            self._frozen_table = self._table()
        try:
            yield
        finally:
            self._frozen_table = None
