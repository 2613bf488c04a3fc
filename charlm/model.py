"""The character-aware language model of Kim, Jernite, Sontag & Rush (2016).

Every word is read through its characters::

    spelling [L chars] -> char embedding [L, E] -> one Conv1d per width w -> tanh -> max over
    positions -> concat [sum of filters] -> highway layers -> LSTM layers -> dropout -> softmax

Predictions are words. The model holds the spelling of every vocabulary word (``spellings``, one
row of character ids per word), so the text itself is only ever word ids: a batch of ids is turned
into characters by indexing that table, and the character encoder runs once per *distinct* word in
the batch, its output gathered back to the tokens (the same numbers as running it per token).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from charlm.config import ModelConfig
from charlm.ops import Dropout, linear_cross_entropy
from charlm.vocab import PAD_CHAR

ACTIVATION_FUNCTIONS = {
    "relu": F.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "identity": lambda x: x,
}

Hidden = tuple[torch.Tensor, torch.Tensor]  # (h, c), each [layers, batch, hidden]


class CharCNN(nn.Module):
    """Character embedding, one convolution per kernel width, tanh, max over positions.

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


class Highway(nn.Module):
    """A stack of highway layers (Srivastava, Greff & Schmidhuber 2015), or their ablations.

    ``kind='highway'``:   z = t * g(W_H y + b_H) + (1 - t) * y,   t = sigmoid(W_T y + b_T)
    ``kind='mlp'``:       z = g(W_H y + b_H)
    ``kind='residual'``:  z = g(W_H y + b_H) + y                  (both gates fixed open)

    One ``Linear(d, 2d)`` per highway layer computes the transform and the gate together; its
    second half is the gate. The gate bias convention (a negative value added at initialisation,
    so the layer starts out carrying its input) is applied in :meth:`CharLM.reset_parameters`.
    """

    def __init__(self, size: int, num_layers: int, kind: str = "highway", activation: str = "relu"):
        super().__init__()
        self.kind = kind
        self.size = size
        out = 2 * size if kind == "highway" else size
        self.layers = nn.ModuleList(nn.Linear(size, out) for _ in range(num_layers))
        self.activation = ACTIVATION_FUNCTIONS[activation]

    def forward(self, y: torch.Tensor, gates: list[torch.Tensor] | None = None) -> torch.Tensor:
        # y: [..., size]. If ``gates`` is a list, each layer's transform gate t is appended to it.
        for layer in self.layers:
            projected = layer(y)
            if self.kind == "highway":
                transform, gate = projected.split(self.size, dim=-1)
                t = torch.sigmoid(gate)
                if gates is not None:
                    gates.append(t)
                y = t * self.activation(transform) + (1.0 - t) * y
            elif self.kind == "mlp":
                y = self.activation(projected)
            else:  # residual
                y = self.activation(projected) + y
        return y

    def gate_biases(self) -> list[torch.Tensor]:
        """The transform-gate half of each layer's bias (empty unless kind is 'highway')."""
        if self.kind != "highway":
            return []
        return [layer.bias[self.size:] for layer in self.layers]


class CharLM(nn.Module):
    """Word-level LSTM language model whose inputs are read from characters.

    Args:
        config: the architecture; ``vocab_size``, ``char_vocab_size`` and ``max_word_length``
            must be filled from the corpus.
        spellings: ``[vocab_size, max_word_length]`` character ids of every word (from
            :meth:`charlm.vocab.Vocabulary.spellings`). Kept as a buffer, not a parameter.
    """

    def __init__(self, config: ModelConfig, spellings: torch.Tensor | None = None):
        super().__init__()
        if config.vocab_size < 1:
            raise ValueError("config.vocab_size must be set from the corpus")
        self.config = config
        uses_chars = config.input in ("char", "both")
        uses_words = config.input in ("word", "both")
        if uses_chars:
            if spellings is None:
                raise ValueError("a character-input model needs the vocabulary's spellings")
            if spellings.shape != (config.vocab_size, config.max_word_length):
                raise ValueError(
                    f"spellings have shape {tuple(spellings.shape)}, config expects "
                    f"({config.vocab_size}, {config.max_word_length})"
                )
            self.char_cnn = CharCNN(
                config.char_vocab_size, config.char_embed_dim, config.kernel_widths, config.num_filters
            )
            self.register_buffer("spellings", spellings.long().clone(), persistent=False)
        else:
            self.char_cnn = None
        self.word_embedding = nn.Embedding(config.vocab_size, config.word_embed_dim) if uses_words else None
        num_highway = 0 if config.highway == "none" else config.highway_layers
        self.highway = Highway(config.input_size, num_highway, config.highway, config.highway_activation)
        self.lstm = nn.LSTM(
            config.input_size,
            config.hidden_size,
            num_layers=config.lstm_layers,
            dropout=config.dropout if config.lstm_layers > 1 else 0.0,  # between LSTM layers
            batch_first=True,
        )
        for bias in self.frozen_recurrent_biases():  # one bias per gate, as in the paper
            bias.requires_grad_(False)
        self.output_dropout = Dropout(config.dropout)  # before the softmax
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.reset_parameters()

    def frozen_recurrent_biases(self) -> list[torch.Tensor]:
        """The LSTM's recurrent biases, held at zero (only when model.lstm_recurrent_bias is false)."""
        if self.config.lstm_recurrent_bias:
            return []
        return [getattr(self.lstm, f"bias_hh_l{layer}") for layer in range(self.config.lstm_layers)]

    def reset_parameters(self) -> None:
        """The reference initialisation: everything U(-r, r), padding row 0, gate bias shifted."""
        r = self.config.init_range
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-r, r)
            self.zero_padding_embedding()
            for bias in self.frozen_recurrent_biases():  # zeroed after the draw: same RNG stream
                bias.zero_()
            for bias in self.highway.gate_biases():
                bias.add_(self.config.highway_gate_bias)

    def set_padding_gradient(self, enabled: bool) -> None:
        """Whether the character padding row takes a gradient (``train.clip_padding_gradient``).

        Off (as built), the row is ``padding_idx`` and its gradient is zero. On (training's
        default), it gets the gradient the reference code gives it, which then counts in the
        clipped norm; the caller puts the row back to zero after each update
        (:meth:`zero_padding_embedding`).
        """
        if self.char_cnn is not None:
            self.char_cnn.embedding.padding_idx = None if enabled else PAD_CHAR

    @torch.no_grad()
    def zero_padding_embedding(self) -> None:
        if self.char_cnn is not None:
            self.char_cnn.embedding.weight[PAD_CHAR].zero_()

    # ---------------------------------------------------------------- word representations

    def encode_spellings(self, chars: torch.Tensor, gates: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Character ids ``[N, L]`` of any words (in the vocabulary or not) -> ``[N, input_size]``.

        For ``input='both'`` use :meth:`embed` instead (it needs the word ids too).
        """
        return self.highway(self.char_cnn(chars), gates)

    def embed(self, words: torch.Tensor, gates: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Word ids ``[...]`` -> per-token input vectors ``[..., input_size]`` (after highway)."""
        parts = []
        if self.char_cnn is not None:
            # Run the char-CNN once per distinct word, then gather back to the tokens.
            unique, inverse = torch.unique(words, return_inverse=True)  # [U], [...]
            parts.append(self.char_cnn(self.spellings[unique])[inverse])  # [..., filters]
        if self.word_embedding is not None:
            parts.append(self.word_embedding(words))
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        return self.highway(x, gates)

    # ---------------------------------------------------------------- language model

    def init_hidden(self, batch_size: int) -> Hidden:
        weight = self.decoder.weight
        shape = (self.config.lstm_layers, batch_size, self.config.hidden_size)
        return weight.new_zeros(shape), weight.new_zeros(shape)

    def forward_embedded(self, x: torch.Tensor, hidden: Hidden) -> tuple[torch.Tensor, Hidden]:
        """Input vectors ``[B, T, input_size]`` -> logits ``[B, T, V]`` and the next hidden state."""
        output, hidden = self.lstm(x, hidden)  # [B, T, H]
        return self.decoder(self.output_dropout(output)), hidden

    def forward(
        self, words: torch.Tensor, hidden: Hidden, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Hidden]:
        """Word ids ``[B, T]`` -> next-word logits ``[B, T, V]`` and the next hidden state.

        With ``targets`` ``[B, T]`` it returns the per-token loss ``[B, T]`` (negative
        log-likelihood, float32) instead of the logits, through the fused softmax layer of
        :mod:`charlm.ops`, which never keeps the logits around (same numbers, less time).
        """
        if targets is None:
            return self.forward_embedded(self.embed(words), hidden)
        output, hidden = self.lstm(self.embed(words), hidden)  # [B, T, H]
        output = self.output_dropout(output).flatten(0, 1)  # [B*T, H]
        nll = linear_cross_entropy(output, self.decoder.weight, self.decoder.bias, targets.flatten())
        return nll.view_as(targets), hidden

    def num_parameters(self) -> int:
        """Trained parameters (a recurrent bias held at zero is not counted)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def detach_hidden(hidden: Hidden) -> Hidden:
    """Cut the graph between chunks of truncated BPTT: the values carry over, gradients do not."""
    return hidden[0].detach(), hidden[1].detach()
