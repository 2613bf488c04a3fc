"""The adaptive softmax (Grave, Joulin, Cissé, Grangier & Jégou 2017), for large vocabularies.

The vocabulary is sorted by frequency (charlm's vocabularies are). The ``cutoffs`` split it into a
head, the most frequent words ``[0, c_1)``, and tail clusters ``[c_1, c_2)``, ..., ``[c_k, V)``::

    p(w | h) = head(h)[w]                                    w in the head
    p(w | h) = head(h)[c_1 + i - 1] * tail_i(h)[w - c_i]     w in cluster i

``head`` is a softmax over the head's words plus one entry per cluster; ``tail_i`` a softmax over
the cluster's words, computed from a projection of ``h`` to ``H / div_value^i`` dimensions (rare
words get smaller vectors). It is an exactly normalised distribution over every word, so the
perplexity it gives is exact, but a token costs ``H x (c_1 + k)`` multiply-adds plus the tail of
its own cluster instead of ``H x V``.

Training and scoring (:meth:`AdaptiveSoftmax.nll`) compute the head for every row and each tail
only for the rows whose target lies in it, each through the fused softmax loss: no ``[N, V]``
matrix. :meth:`AdaptiveSoftmax.log_probs` builds the full ``[N, V]`` log-probabilities for
generation and analyses (the caller chooses N).

``torch.nn.AdaptiveLogSoftmaxWithLoss`` computes the same distribution (without tail biases);
this layer exists because torch's fails under bf16 autocast (a dtype mismatch in ``index_copy_``,
torch 2.13) and is no faster in fp32 (docs/scale.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from charlm.config.schema import PartOptions
from charlm.errors import CharlmError
from charlm.nn.fused_softmax import linear_cross_entropy
from charlm.nn.output import OutputLayer
from charlm.nn.registry import register_output

HEAD_FRACTION = 0.4  # the default head: two fifths of the vocabulary (PTB: 4,000 of 10,000 words)...
HEAD_SIZE_LIMIT = 20_000  # ...but never more words (Transformer-XL and fairseq on WikiText-103)
CLUSTER_GROWTH = 3  # each default tail cluster ends 3x further into the vocabulary than the last


def default_cutoffs(vocab_size: int) -> list[int]:
    """Cutoffs for ``vocab_size`` words: a head of two fifths of the vocabulary (at most 20,000
    words), then clusters ending 3x further on each: 10k -> [4000], 100k -> [20000, 60000], 250k ->
    [20000, 60000, 180000]. (On PTB after 2 epochs a head of 2,000 words was 2.1% behind the full
    softmax's validation perplexity, one of 4,000 0.5%: docs/scale.md.)"""
    cutoff = min(HEAD_SIZE_LIMIT, max(int(vocab_size * HEAD_FRACTION), 1))
    cutoffs = []
    while cutoff < vocab_size:
        cutoffs.append(cutoff)
        cutoff *= CLUSTER_GROWTH
    return cutoffs


def resolve_cutoffs(cutoffs: list[int], vocab_size: int) -> list[int]:
    """``model.output.cutoffs`` as used: the user's (checked) or, if empty, the default."""
    cutoffs = list(cutoffs) or default_cutoffs(vocab_size)
    if not cutoffs or any(b <= a for a, b in zip(cutoffs, cutoffs[1:])) or cutoffs[0] < 1 or cutoffs[-1] >= vocab_size:
        raise CharlmError(
            f"model.output.cutoffs {cutoffs} must increase strictly from 1 to below the vocabulary size "
            f"{vocab_size:,}; leave it empty for the default ({default_cutoffs(vocab_size)})"
        )
    return cutoffs


class _Tail(nn.Module):
    """One tail cluster: ``h`` projected to ``dim`` dimensions, then a softmax over ``size`` words."""

    def __init__(self, hidden_size: int, dim: int, size: int):
        super().__init__()
        self.projection = nn.Linear(hidden_size, dim, bias=False)
        self.decoder = nn.Linear(dim, size)

    def nll(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return linear_cross_entropy(self.projection(hidden), self.decoder.weight, self.decoder.bias, targets)

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.decoder(self.projection(hidden)).float(), dim=-1)


@dataclass
class AdaptiveOptions(PartOptions):
    """``model.output: {name: adaptive, ...}``: the adaptive softmax (Grave et al. 2017)."""

    name: str = "adaptive"

    cutoffs: list[int] = field(default_factory=list)
    """The first word id of each tail cluster, increasing (words are sorted by frequency). Empty: a
    head of two fifths of the vocabulary, at most 20,000 words, then clusters ending 3x further on
    each (10k words: [4000]; 250k: [20000, 60000, 180000])."""

    div_value: float = 4.0
    """Tail cluster i projects the core's output to hidden_size / div^i dimensions (Grave et al.: 4)."""

    def check(self, model) -> None:
        if self.div_value < 1.0:
            raise CharlmError(f"model.output.div_value must be at least 1, got {self.div_value}")


@register_output("adaptive", AdaptiveOptions)
class AdaptiveSoftmax(OutputLayer):
    """Args:
    hidden_size: size of the core's outputs.
    vocab_size: number of words, most frequent first.
    cutoffs: the first word of each tail cluster (empty: :func:`default_cutoffs`; checked).
    div_value: cluster i's projection has ``hidden_size / div_value^i`` dimensions.
    """

    def __init__(self, hidden_size: int, vocab_size: int, cutoffs: list[int], div_value: float):
        super().__init__()
        cutoffs = resolve_cutoffs(cutoffs, vocab_size)
        self.input_size, self.vocab_size, self.cutoffs = hidden_size, vocab_size, cutoffs
        self.head = nn.Linear(hidden_size, cutoffs[0] + len(cutoffs))
        bounds = [*cutoffs, vocab_size]
        self.tails = nn.ModuleList(
            _Tail(hidden_size, max(1, round(hidden_size / div_value ** (i + 1))), bounds[i + 1] - bounds[i])
            for i in range(len(cutoffs))
        )
        self.register_buffer("_starts", torch.tensor(cutoffs), persistent=False)

    def initialise_after_uniform(self) -> None:
        """Each cluster's head entry starts at the log of the cluster's size, so the first
        distribution is near uniform over the words (as a full softmax's) instead of 1/(head
        entries) per cluster, which would start every rare word log(cluster size) nats behind."""
        bounds = [*self.cutoffs, self.vocab_size]
        sizes = torch.tensor([b - a for a, b in zip(bounds, bounds[1:])], dtype=self.head.bias.dtype)
        with torch.no_grad():
            self.head.bias[self.cutoffs[0] :] += sizes.log()

    @classmethod
    def flops_per_token(cls, config, input_size: int) -> float:
        """The head only: the tails' cost depends on how many tokens fall into them."""
        cutoffs = resolve_cutoffs(config.output.cutoffs, config.vocab_size)
        return 2 * input_size * (cutoffs[0] + len(cutoffs))

    @classmethod
    def from_config(cls, config, model) -> "AdaptiveSoftmax":
        return cls(model.core.output_size, config.vocab_size, config.output.cutoffs, config.output.div_value)

    def nll(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        head_size = self.cutoffs[0]
        cluster = torch.bucketize(targets, self._starts, right=True)  # [N]: 0 = head, i = tail cluster i
        head_targets = torch.where(cluster == 0, targets, head_size + cluster - 1)
        nll = linear_cross_entropy(hidden, self.head.weight, self.head.bias, head_targets)
        for i, (tail, start) in enumerate(zip(self.tails, self.cutoffs), start=1):
            # Every tail runs, even on no rows: each parameter takes part in every step (DDP needs it).
            rows = (cluster == i).nonzero().squeeze(1)
            nll = nll.index_add(0, rows, tail.nll(hidden[rows], targets[rows] - start))
        return nll

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        head_size = self.cutoffs[0]
        head = torch.log_softmax(self.head(hidden).float(), dim=-1)  # [N, head_size + clusters]
        parts = [head[:, :head_size]]
        for i, tail in enumerate(self.tails):
            parts.append(head[:, head_size + i, None] + tail.log_probs(hidden))
        return torch.cat(parts, dim=1)
