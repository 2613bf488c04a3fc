"""The plain reference: the paper's model as most public ports write it (a Conv1d per width over every
token's spelling, tanh, max, highway, ``nn.LSTM``, a full softmax, fp32, no caching), its stream
score, and a copy of a charlm model's weights into it. :mod:`charlm.benchmark` times charlm against it;
the tests check that both compute the same loss and gradients."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from charlm.config import ModelConfig
from charlm.model import CharLM
from charlm.text import PAD_CHAR


class PlainCharLM(nn.Module):
    """The straightforward implementation: what most public ports write."""

    def __init__(self, c: ModelConfig, spellings: torch.Tensor):
        super().__init__()
        self.spellings = spellings
        self.embedding = nn.Embedding(c.char_vocab_size, c.char_embed_dim, padding_idx=PAD_CHAR)
        self.convs = nn.ModuleList(nn.Conv1d(c.char_embed_dim, n, w) for w, n in zip(c.kernel_widths, c.num_filters))
        d = sum(c.num_filters)
        self.transforms = nn.ModuleList(nn.Linear(d, d) for _ in range(c.highway_layers))
        self.gates = nn.ModuleList(nn.Linear(d, d) for _ in range(c.highway_layers))
        self.lstm = nn.LSTM(d, c.hidden_size, c.core.layers, dropout=c.dropout, batch_first=True)
        self.dropout = nn.Dropout(c.dropout)
        self.decoder = nn.Linear(c.hidden_size, c.vocab_size)
        for p in self.parameters():
            nn.init.uniform_(p, -c.init_range, c.init_range)
        with torch.no_grad():
            self.embedding.weight[PAD_CHAR].zero_()
            for gate in self.gates:
                gate.bias.add_(c.highway_gate_bias)

    def encode(self, words: torch.Tensor) -> torch.Tensor:
        b, t = words.shape
        x = self.embedding(self.spellings[words.flatten()]).transpose(1, 2)  # [B*T, E, L]
        y = torch.cat([torch.tanh(conv(x)).max(dim=2).values for conv in self.convs], dim=1)
        for transform, gate in zip(self.transforms, self.gates):
            g = torch.sigmoid(gate(y))
            y = g * F.relu(transform(y)) + (1 - g) * y
        return y.view(b, t, -1)

    def forward(self, words, hidden):
        out, hidden = self.lstm(self.encode(words), hidden)
        return self.decoder(self.dropout(out)), hidden


def zero_state(model, batch):
    """The initial state: charlm's core state, or the plain model's ``(h, c)``."""
    if isinstance(model, CharLM):
        return model.initial_state(batch)
    lstm = model.lstm
    shape = (lstm.num_layers, batch, lstm.hidden_size)
    return torch.zeros(shape), torch.zeros(shape)


@torch.inference_mode()
def plain_stream_score(model: PlainCharLM, ids: np.ndarray, start_id: int, seq_len: int = 35) -> tuple[float, int]:
    """The reference evaluation: one stream, 35-step chunks, the encoder run for every token."""
    model.eval()
    targets = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    inputs = torch.cat([targets.new_tensor([start_id]), targets[:-1]])
    hidden, total = zero_state(model, 1), 0.0
    for start in range(0, len(targets), seq_len):
        logits, hidden = model(inputs[None, start : start + seq_len], hidden)
        total += F.cross_entropy(logits[0], targets[start : start + seq_len], reduction="sum").item()
    return total, len(targets)


def plain_model_copy(plain: PlainCharLM, model: CharLM) -> PlainCharLM:
    """Give the plain model charlm's weights, so the two evaluations must agree."""
    with torch.no_grad():
        plain.embedding.weight.copy_(model.encoder.char_cnn.embedding.weight)
        for a, b in zip(plain.convs, model.encoder.char_cnn.convs):
            a.load_state_dict(b.state_dict())
        d = model.config.input_size
        for t, g, layer in zip(plain.transforms, plain.gates, model.highway.layers):
            t.weight.copy_(layer.weight[:d])
            t.bias.copy_(layer.bias[:d])  # noqa: E702
            g.weight.copy_(layer.weight[d:])
            g.bias.copy_(layer.bias[d:])  # noqa: E702
        plain.lstm.load_state_dict(model.core.lstm.state_dict())
        plain.decoder.load_state_dict(model.output.decoder.state_dict())
    return plain
