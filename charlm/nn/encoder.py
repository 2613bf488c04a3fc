"""The word encoder: a word's vector from its characters (char-CNN), its id (embedding), or both.

    spelling [L chars] -> char embedding [L, E] -> one Conv1d per width w -> max over positions
    -> tanh -> concat [sum of filters]

The encoder holds the spelling of every vocabulary word (``spellings``, one row of character ids
per word), so the text itself is only ever word ids: a batch of ids is turned into characters by
indexing that table, and the char-CNN runs once per *distinct* word of the batch, its output
gathered back to the tokens (the same numbers as running it per token).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from charlm.text import PAD_CHAR

SPELLING_BLOCK = 4096  # words encoded together when a whole vocabulary is encoded


class CharCNN(nn.Module):
    """Character embedding, one convolution per kernel width, max over positions, tanh.

    As in the reference code the convolutions run over the whole padded spelling (begin-of-word,
    characters, end-of-word, padding); the padding embedding is kept at zero.
    """

    def __init__(self, char_vocab_size: int, embed_dim: int, widths: list[int], filters: list[int]):
        super().__init__()
        self.embedding = nn.Embedding(char_vocab_size, embed_dim, padding_idx=PAD_CHAR)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, n, w) for w, n in zip(widths, filters))
        self.max_width = max(widths)
        self.output_size = sum(filters)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        # chars: [N, L] character ids -> [N, sum(filters)]
        if chars.size(1) < self.max_width:  # a spelling shorter than the widest filter
            chars = F.pad(chars, (0, self.max_width - chars.size(1)), value=PAD_CHAR)
        x = self.embedding(chars)  # [N, L, E]
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            conv_outputs = self.convolve_as_matmuls(x.to(torch.get_autocast_dtype("cpu")))
        else:
            x = x.transpose(1, 2)  # [N, E, L]
            conv_outputs = [conv(x).transpose(1, 2) for conv in self.convs]
        # max over positions, then tanh: the same as tanh then max (tanh is increasing), but the
        # tanh runs on [N, filters] instead of [N, filters, positions].
        features = [y.max(dim=1).values for y in conv_outputs]  # each [N, filters_w]
        return torch.tanh(torch.cat(features, dim=1))

    def convolve_as_matmuls(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The convolutions as one matrix product per width over the spelling's windows.

        ``[N, L, E]`` -> per width w ``[N, L - w + 1, filters_w]``, the numbers ``Conv1d``
        computes. Used under CPU bfloat16 autocast, where oneDNN's bf16 convolution backward is
        slow: this way forward and backward together take about 30% less time (in fp32 the
        convolution is faster and is kept). The caller casts ``x`` to bf16 first, so that the
        windows are copied at half the size.
        """
        outputs = []
        for conv in self.convs:
            width = conv.kernel_size[0]
            windows = x.unfold(1, width, 1)  # [N, P, E, w], P = L - w + 1 positions
            n, positions = windows.shape[:2]
            weight = conv.weight.reshape(conv.out_channels, -1)  # [filters, E * w], same order
            y = F.linear(windows.reshape(n * positions, -1), weight, conv.bias)
            outputs.append(y.view(n, positions, -1))
        return outputs

    def forward_trimmed(self, chars: torch.Tensor) -> torch.Tensor:
        """Like :meth:`forward`, but each word's convolutions run over its own characters and
        markers only, never over the padding after them (the output layer's encoder: same
        features for a word whatever the longest spelling, and about half the work on PTB's
        vocabulary, whose spellings fill 9 of 21 positions on average). Words are grouped by
        length; ``[N, L]`` -> ``[N, sum(filters)]`` in the input's order."""
        lengths = (chars != PAD_CHAR).sum(dim=1)  # [N], markers included
        features, order = [], []
        for length in lengths.unique().tolist():
            rows = (lengths == length).nonzero().squeeze(1)
            order.append(rows)
            features.append(self(chars[rows, :length]))
        restore = torch.argsort(torch.cat(order))
        return torch.cat(features)[restore]

    def set_padding_gradient(self, enabled: bool) -> None:
        """Whether the padding row takes a gradient (it is zeroed again after each update)."""
        self.embedding.padding_idx = None if enabled else PAD_CHAR

    @torch.no_grad()
    def zero_padding_embedding(self) -> None:
        self.embedding.weight[PAD_CHAR].zero_()


class WordEncoder(nn.Module):
    """Word ids ``[...]`` -> vectors ``[..., output_size]``: the char-CNN of each word's spelling
    (``char_cnn``), a word embedding (``word_embedding``), or the two concatenated.

    Args:
        spellings: ``[vocab_size, max_word_length]`` character ids of every word (from
            :meth:`charlm.text.Vocabulary.spellings`), for a char-CNN; kept as a buffer.
    """

    def __init__(self, char_cnn: CharCNN | None, word_embedding: nn.Embedding | None, spellings: torch.Tensor | None):
        super().__init__()
        if char_cnn is None and word_embedding is None:
            raise ValueError("a word encoder needs a char-CNN, a word embedding, or both")
        self.char_cnn = char_cnn
        self.word_embedding = word_embedding
        if char_cnn is not None:
            if spellings is None:
                raise ValueError("a character-input model needs the vocabulary's spellings")
            self.register_buffer("spellings", spellings.long().clone(), persistent=False)
        self.output_size = (char_cnn.output_size if char_cnn is not None else 0) + (
            word_embedding.embedding_dim if word_embedding is not None else 0
        )

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.char_cnn is not None:
            # Run the char-CNN once per distinct word, then gather back to the tokens.
            unique, inverse = torch.unique(words, return_inverse=True)  # [U], [...]
            parts.append(self.char_cnn(self.spellings[unique])[inverse])  # [..., filters]
        if self.word_embedding is not None:
            parts.append(self.word_embedding(words))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    def read(self, chars: torch.Tensor | None, ids: torch.Tensor | None) -> torch.Tensor:
        """Vectors of words given by spelling ``chars`` ``[N, L]`` (char-CNN) and/or id ``ids``
        ``[N]`` (word embedding), whichever parts this encoder has: any spelling, in the
        vocabulary or not."""
        parts = []
        if self.char_cnn is not None:
            parts.append(self.char_cnn(chars))
        if self.word_embedding is not None:
            parts.append(self.word_embedding(ids))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
