"""The character-aware language model of Kim, Jernite, Sontag & Rush (2016), made of parts::

    word ids [B, T] -> encoder -> highway -> recurrent core -> output layer -> next-word loss

* encoder (:class:`~charlm.nn.WordEncoder`): each word's spelling through a char-CNN (the paper),
  a word embedding, or both; the char-CNN runs once per distinct word of a batch;
* highway (:class:`~charlm.nn.Highway`): highway layers, or the mlp / residual / no-layer ablations;
* core (``model.core``, :data:`charlm.nn.CORES`): ``lstm`` (the paper) or ``rhn`` (recurrent
  highway network); the state is a dict of named tensors;
* output (``model.output``, :data:`charlm.nn.OUTPUTS`): ``full`` (the paper's softmax), ``char``
  (output embeddings computed from spellings) or ``adaptive`` (the adaptive softmax, for large
  vocabularies).

The parts meet only through their protocols (:mod:`charlm.nn.core`, :mod:`charlm.nn.output`);
scoring, generation, the analyses and checkpoints use nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from charlm.config import ModelConfig
from charlm.nn import CORES, OUTPUTS, CharCNN, Highway, State, WordEncoder

if TYPE_CHECKING:
    from charlm.text import Vocabulary


class CharLM(nn.Module):
    """Word-level language model whose inputs are read from characters.

    Args:
        config: the architecture; ``vocab_size``, ``char_vocab_size`` and ``max_word_length``
            must be filled from the corpus.
        spellings: ``[vocab_size, max_word_length]`` character ids of every word (from
            :meth:`charlm.text.Vocabulary.spellings`); needed when ``config.uses_spellings``.
    """

    def __init__(self, config: ModelConfig, spellings: torch.Tensor | None = None):
        super().__init__()
        if config.vocab_size < 1:
            raise ValueError("config.vocab_size must be set from the corpus")
        if config.uses_spellings:
            if spellings is None:
                raise ValueError("a character-aware model needs the vocabulary's spellings")
            if spellings.shape != (config.vocab_size, config.max_word_length):
                raise ValueError(
                    f"spellings have shape {tuple(spellings.shape)}, config expects "
                    f"({config.vocab_size}, {config.max_word_length})"
                )
        self.config = config
        char_cnn = None
        if config.input in ("char", "both"):
            char_cnn = CharCNN(config.char_vocab_size, config.char_embed_dim, config.kernel_widths, config.num_filters)
        word_embedding = (
            nn.Embedding(config.vocab_size, config.word_embed_dim) if config.input in ("word", "both") else None
        )
        self.encoder = WordEncoder(char_cnn, word_embedding, spellings if config.uses_spellings else None)
        num_highway = 0 if config.highway == "none" else config.highway_layers
        self.highway = Highway(
            config.input_size, num_highway, config.highway, config.highway_activation, config.highway_gate_bias
        )
        self.core = CORES[config.core.name].from_config(config, config.input_size)
        self.output = OUTPUTS[config.output.name].from_config(config, self)
        self.reset_parameters()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def reset_parameters(self) -> None:
        """The reference initialisation: everything U(-r, r), padding rows 0, then each part's
        special values (highway and RHN gate biases, frozen LSTM biases)."""
        r = self.config.init_range
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-r, r)
        self.zero_padding_embedding()
        self.highway.shift_gate_biases()
        self.core.initialise_after_uniform()
        self.output.initialise_after_uniform()

    def char_cnns(self) -> list[CharCNN]:
        """Every char-CNN of the model (the input's, and the output layer's own if it has one)."""
        found = [m for m in self.modules() if isinstance(m, CharCNN)]
        return found

    def set_padding_gradient(self, enabled: bool) -> None:
        """Whether the character padding rows take a gradient (``train.clip_padding_gradient``).

        Off (as built), the row is ``padding_idx`` and its gradient is zero. On (training's
        default), it gets the gradient the reference code gives it, which then counts in the
        clipped norm; the caller puts the row back to zero after each update
        (:meth:`zero_padding_embedding`).
        """
        for cnn in self.char_cnns():
            cnn.set_padding_gradient(enabled)

    def zero_padding_embedding(self) -> None:
        for cnn in self.char_cnns():
            cnn.zero_padding_embedding()

    # ---------------------------------------------------------------- word representations

    def encode_spellings(self, chars: torch.Tensor, gates: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Character ids ``[N, L]`` of any words (in the vocabulary or not) -> ``[N, input_size]``.

        For ``input='both'`` use :meth:`embed` instead (it needs the word ids too).
        """
        return self.highway(self.encoder.char_cnn(chars), gates)

    def embed(self, words: torch.Tensor, gates: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Word ids ``[...]`` -> per-token input vectors ``[..., input_size]`` (after highway)."""
        return self.highway(self.encoder(words), gates)

    # ---------------------------------------------------------------- language model

    def initial_state(self, batch_size: int) -> State:
        """The core's zero state for ``batch_size`` rows."""
        return self.core.initial_state(batch_size)

    def log_probs_embedded(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Input vectors ``[B, T, input_size]`` -> next-word log-probabilities ``[B, T, V]``
        (float32) and the next state."""
        output, state = self.core(x, state)  # [B, T, H]
        return self.output.log_probs(output.flatten(0, 1)).view(*output.shape[:2], -1), state

    def forward(
        self, words: torch.Tensor, state: State, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """Word ids ``[B, T]`` -> next-word log-probabilities ``[B, T, V]`` and the next state.

        With ``targets`` ``[B, T]`` it returns the per-token loss ``[B, T]`` (negative
        log-likelihood, float32) instead, through the output layer's ``nll`` (for the full
        softmax the fused layer, which never keeps the ``[N, V]`` logits around).
        """
        if targets is None:
            return self.log_probs_embedded(self.embed(words), state)
        output, state = self.core(self.embed(words), state)  # [B, T, H]
        nll = self.output.nll(output.flatten(0, 1), targets.flatten())
        return nll.view_as(targets), state

    # ---------------------------------------------------------------- sharing

    @classmethod
    def from_pretrained(cls, ref: str, device: str = "cpu") -> tuple["CharLM", "Vocabulary"]:
        """``(model, vocab)`` of an exported model: a directory (a run's ``best/``) or a Hugging Face
        hub id, through the local cache when offline (:func:`charlm.hub.from_pretrained`)."""
        from charlm.hub import from_pretrained

        return from_pretrained(ref, device)

    def save_pretrained(self, directory: str, vocab: "Vocabulary") -> None:
        """Export this model with its vocabulary: safetensors weights, config.json, the vocabulary
        files (:func:`charlm.hub.save_pretrained`); ``charlm push`` uploads such a directory."""
        from charlm.hub import save_pretrained

        save_pretrained(self, vocab, directory)

    def num_parameters(self) -> int:
        """Trained parameters (a recurrent bias held at zero is not counted)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def describe_model(config: ModelConfig) -> str:
    """One line: input, highway, core and output, e.g. for the training summary."""
    highway = "no highway" if config.highway == "none" else f"{config.highway_layers} {config.highway}"
    core = CORES[config.core.name].describe(config)
    return f"{config.input} input, {highway}, {core}, {config.output.name} softmax"


# State-dict names of models exported before the model was split into parts.
LEGACY_PREFIXES = {
    "char_cnn.": "encoder.char_cnn.",
    "word_embedding.": "encoder.word_embedding.",
    "lstm.": "core.lstm.",
    "decoder.": "output.decoder.",
}


def upgrade_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the weights of a model exported by charlm before model parts (same numbers)."""
    renamed = {}
    for name, tensor in state.items():
        for old, new in LEGACY_PREFIXES.items():
            if name.startswith(old):
                name = new + name[len(old) :]
                break
        renamed[name] = tensor
    return renamed
