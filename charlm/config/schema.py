"""Configuration: the one source of every default.

A run is described by :class:`RunConfig`, made of a :class:`ModelConfig` (the network) and a
:class:`TrainConfig` (the recipe). The dataclass defaults below are the only defaults; a YAML file
overrides them, and ``key=value`` arguments on the command line override the YAML::

    charlm train --config ptb-char-small ... train.max_epochs=2 model.dropout=0.3

``--config`` takes a YAML file or the name of a config shipped in the package (``charlm/configs/``,
e.g. ``tiny``, ``ptb-char-small``). Unknown keys and values of the wrong type are errors
(:class:`~charlm.errors.CharlmError`), never silently ignored. Every field has a docstring (the
string literal under it); ``describe_fields`` turns those into the help text of ``charlm train --help``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from charlm.errors import CharlmError

INPUT_KINDS = ("char", "word", "both")
HIGHWAY_KINDS = ("highway", "none", "mlp", "residual")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")
OPTIMIZERS = ("sgd", "adam", "adamw")
DECAY_COMPARE = ("previous", "best")
AVERAGES = ("none", "asgd")
MIXED_PRECISION = ("auto", "no", "fp32", "bf16", "fp16")  # "fp32" is "no" (accelerate's name)
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
"""The configs shipped in the package; ``--config NAME`` reads ``CONFIG_DIR / NAME.yaml``."""


@dataclass
class PartOptions:
    """The options of one registered part, a recurrent core or an output layer: its ``name`` (the
    key it is registered under) and the fields of the part's own options dataclass, defined in the
    part's file beside the part (``LSTMOptions`` in ``charlm/nn/lstm.py``, ...)."""

    name: str = ""

    def check(self, model: "ModelConfig") -> None:
        """Raise :class:`~charlm.errors.CharlmError` for values that cannot work (given the model)."""


def part_options(kind: str, value: "PartOptions | str") -> PartOptions:
    """``model.core`` / ``model.output`` as options: a name gives that part's defaults."""
    from charlm.nn import CORES, OUTPUTS  # the registries: the parts register themselves

    table = CORES if kind == "core" else OUTPUTS
    name = value.name if isinstance(value, PartOptions) else value
    _check_choice(f"model.{kind}", name, tuple(table))
    expected = table[name].Options
    if not isinstance(value, PartOptions):
        return expected()
    if type(value) is not expected:
        raise CharlmError(f"model.{kind} {name!r} takes {expected.__name__}, not {type(value).__name__}")
    return value


def check_probability(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise CharlmError(f"{name} must be in [0, 1), got {value}")


@dataclass
class ModelConfig:
    """The network of Kim et al. (2016). Defaults are the paper's Char-Small."""

    input: str = "char"
    """What the LSTM reads per word: 'char' (the char-CNN, the paper's model), 'word' (a word
    embedding, the word-level baselines) or 'both' (the two concatenated)."""

    char_embed_dim: int = 15
    """Size of each character embedding."""

    kernel_widths: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6])
    """Widths (in characters) of the convolution filters, one convolution per width."""

    num_filters: list[int] = field(default_factory=lambda: [25, 50, 75, 100, 125, 150])
    """Number of feature maps for each kernel width (same length as kernel_widths)."""

    highway: str = "highway"
    """What follows the char-CNN: 'highway' (Srivastava et al. 2015), 'none', 'mlp' (plain
    layers, the paper's ablation) or 'residual' (both gates fixed open: z = g(Wy + b) + y)."""

    highway_layers: int = 1
    """Number of layers of that kind (ignored when highway is 'none')."""

    highway_gate_bias: float = -2.0
    """Added to the transform-gate bias at initialisation, so the layers start out carrying
    their input (t = sigmoid(-2) ~ 0.12)."""

    highway_activation: str = "relu"
    """Nonlinearity g of the highway / MLP / residual transform."""

    word_embed_dim: int = 650
    """Size of the word embedding (input 'word' or 'both' only)."""

    core: PartOptions = field(default_factory=lambda: part_options("core", "lstm"))
    """The recurrent core and its own options, e.g. ``core: {name: rhn, depth: 4}`` (or just
    ``core: rhn`` for its defaults): 'lstm' (the paper: stacked LSTM layers) or 'rhn' (a Recurrent
    Highway Network, Zilly et al. 2017). Each core's options are listed under its name below."""

    hidden_size: int = 300
    """Size of the core's state: LSTM hidden (and cell) size, or the RHN state size."""

    dropout: float = 0.5
    """Dropout probability on the core's output (before the output layer) and, for the LSTM,
    between its layers (the paper: 0.5, none on the core's input)."""

    input_dropout: float = 0.0
    """Dropout probability on the core's input, the per-word vectors (the paper: none)."""

    output: PartOptions = field(default_factory=lambda: part_options("output", "full"))
    """The output layer and its own options, e.g. ``output: {name: adaptive, cutoffs: [4000]}``:
    'full' (the paper: a softmax with one free embedding per word), 'char' (each word's output
    embedding and bias computed from its spelling, Jozefowicz et al. 2016: input and output tied
    through the spelling, any word can be scored), 'tied' (the full softmax whose table is the
    input's word embedding: needs model.input word or both, word_embed_dim = hidden_size) or
    'adaptive' (the adaptive softmax of Grave et al. 2017 for large vocabularies: exact, much
    cheaper per token)."""

    init_range: float = 0.05
    """Every parameter starts uniform in [-init_range, init_range] (then the character padding
    row is zeroed and highway_gate_bias is added to the gate biases)."""

    vocab_size: int = 0
    """Number of words (output classes). Set from the prepared corpus; leave 0 in configs."""

    char_vocab_size: int = 0
    """Number of characters, reserved ids included. Set from the prepared corpus."""

    max_word_length: int = 0
    """Characters per spelling, begin/end-of-word markers included. Set from the corpus."""

    def __post_init__(self) -> None:
        _check_choice("model.input", self.input, INPUT_KINDS)
        self.core = part_options("core", self.core)
        self.output = part_options("output", self.output)
        _check_choice("model.highway", self.highway, HIGHWAY_KINDS)
        _check_choice("model.highway_activation", self.highway_activation, ACTIVATIONS)
        if self.uses_spellings:
            if len(self.kernel_widths) != len(self.num_filters) or not self.kernel_widths:
                raise CharlmError(
                    f"model.kernel_widths ({len(self.kernel_widths)} entries) and model.num_filters "
                    f"({len(self.num_filters)} entries) must be non-empty and of the same length"
                )
            if min(self.kernel_widths) < 1 or min(self.num_filters) < 1:
                raise CharlmError("model.kernel_widths and model.num_filters must be positive")
        for name in ("char_embed_dim", "word_embed_dim", "hidden_size"):
            if getattr(self, name) < 1:
                raise CharlmError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if self.highway_layers < 0:
            raise CharlmError(f"model.highway_layers must be >= 0, got {self.highway_layers}")
        for name in ("dropout", "input_dropout"):
            check_probability(f"model.{name}", getattr(self, name))
        self.core.check(self)
        self.output.check(self)

    @property
    def uses_spellings(self) -> bool:
        """Whether the model reads spellings (a char-CNN on the input or output side)."""
        return self.input != "word" or self.output.name == "char"

    @property
    def cnn_output_size(self) -> int:
        return sum(self.num_filters) if self.input != "word" else 0

    @property
    def input_size(self) -> int:
        """Size of the per-word vector fed to the (highway layers and the) LSTM."""
        size = self.cnn_output_size
        if self.input in ("word", "both"):
            size += self.word_embed_dim
        return size


@dataclass
class TrainConfig:
    """The training recipe. Defaults are the paper's (reference code main.lua) for PTB."""

    batch_size: int = 20
    """Rows of the text stream per process; N processes train on N * batch_size rows."""

    seq_len: int = 35
    """Steps of truncated backpropagation through time."""

    max_epochs: int = 25
    """Number of passes over the training split."""

    max_steps: int = 0
    """Stop after this many optimizer updates in total (0: no limit). A run cut short still
    evaluates on validation, exports best/ and writes its metrics record."""

    optimizer: str = "sgd"
    """'sgd' (the paper), 'adam' or 'adamw'."""

    lr: float = 1.0
    """Initial learning rate."""

    momentum: float = 0.0
    """SGD momentum (the paper: none)."""

    weight_decay: float = 0.0
    """Weight decay (L2 for sgd/adam, decoupled for adamw)."""

    grad_clip: float = 5.0
    """Clip the global gradient norm at this value (0: no clipping). The gradient is that of the
    loss summed over the seq_len time steps and averaged over the batch rows, as in the paper."""

    clip_padding_gradient: bool = True
    """Count the character padding embedding's gradient in the clipped norm, as the reference
    code does: there the padding row takes a gradient like any other row (summed over every
    padding position; on a trained Char-Small it is larger than all the other gradients together,
    so the clipped steps shrink) and is set back to zero after each update. False: the row is
    frozen and has no gradient. The forward pass is the same either way; only the clipping, and so
    the step size, differs. On PTB Char-Small it is worth about 1 perplexity point (README)."""

    lr_decay: float = 0.5
    """Multiply the learning rate by this when validation perplexity fails to improve."""

    decay_threshold: float = 1.0
    """'Fails to improve' means: improves by no more than this many perplexity points."""

    decay_compare: str = "previous"
    """Compare validation perplexity with the 'previous' epoch (reference code) or the 'best'."""

    decay_start_epoch: int = 3
    """First epoch after which the learning rate may decay (the reference code: 3)."""

    min_lr: float = 0.0
    """Stop training once the learning rate falls below this (0: never)."""

    average: str = "none"
    """'none' (the paper) or 'asgd': averaged SGD as in AWD-LSTM (NT-ASGD). At the first epoch where
    the learning rate would decay, start averaging the weights instead (a running mean over every
    update from then on) and keep the learning rate (lr_decay and min_lr no longer apply);
    validation and best/ then use the averaged weights (charlm/averaging.py)."""

    seed: int = 3435
    """Random seed (the reference code's)."""

    mixed_precision: str = "auto"
    """'auto': a training step of the model is timed in fp32 and in bf16 (fp16 on a GPU without
    bf16) on the device itself, about a second, and the faster is used; the answer is cached per
    machine and model shape. accelerate's own setting wins over 'auto' when the user made one
    (accelerate launch --mixed_precision, or `accelerate config`). 'fp32' (or 'no'), 'bf16' or 'fp16': as given."""

    num_threads: int = 0
    """CPU threads per process (0: the cores available to the process divided among the processes
    on this machine). OMP_NUM_THREADS is not read: accelerate's launcher sets it to 1."""

    gradient_accumulation_steps: int = 1
    """Consecutive chunks whose gradients are summed before one update."""

    eval_chunk_len: int = 2048
    """Tokens per LSTM call when scoring the full validation stream (speed only; exact)."""

    checkpoint_every_steps: int = 0
    """Also save a resumable state every N updates (0: only at the end of each epoch)."""

    keep_checkpoints: int = 2
    """How many of the newest resumable states to keep."""

    log_every: int = 50
    """Update the progress bar's loss and speed (and log them to the tracker) every N updates."""

    report_to: str = "none"
    """Experiment tracking through accelerate's trackers: 'none', 'tensorboard' (event files in
    OUTPUT_DIR/charlm; pip install charlm[tensorboard]), 'all' (every tracker installed), or any
    other tracker accelerate supports and that is installed (wandb, mlflow, ...). Logged every
    log_every updates: train loss and perplexity, learning rate, tokens/s, gradient norm; per epoch:
    validation perplexity; the config as hyperparameters."""

    def __post_init__(self) -> None:
        _check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("train.decay_compare", self.decay_compare, DECAY_COMPARE)
        _check_choice("train.average", self.average, AVERAGES)
        if self.mixed_precision:
            _check_choice("train.mixed_precision", self.mixed_precision, MIXED_PRECISION)
        for name in (
            "batch_size",
            "seq_len",
            "gradient_accumulation_steps",
            "eval_chunk_len",
            "keep_checkpoints",
            "log_every",
        ):
            if getattr(self, name) < 1:
                raise CharlmError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_epochs", "max_steps", "checkpoint_every_steps", "decay_start_epoch", "num_threads"):
            if getattr(self, name) < 0:
                raise CharlmError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise CharlmError(f"train.lr must be positive, got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise CharlmError(f"train.lr_decay must be in (0, 1], got {self.lr_decay}")


@dataclass
class RunConfig:
    """Everything a training run needs besides the data: the model and the recipe."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise CharlmError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
