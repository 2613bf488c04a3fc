"""The building blocks of a character-aware language model; no I/O here.

    word ids -> encoder (char-CNN, word embedding) -> highway -> recurrent core -> output layer

| file | what |
|---|---|
| ``encoder.py`` | :class:`CharCNN`, :class:`WordEncoder` (char-CNN once per distinct word) |
| ``highway.py`` | :class:`Highway` (highway / mlp / residual layers, the gate-bias initialisation) |
| ``dropout.py`` | :class:`Dropout`, :class:`LockedDropout` (variational), :func:`drop_weights` (DropConnect) |
| ``core.py`` | the recurrent core's protocol (:class:`RecurrentCore`, named-tensor states) |
| ``lstm.py`` | :class:`LSTMCore`: the paper's stacked LSTM (+ locked dropout, weight drop) |
| ``rhn.py`` | :class:`RHNCore`: the Recurrent Highway Network (Zilly et al. 2017) |
| ``output.py`` | the output layer's protocol (:class:`OutputLayer`) and :class:`FullSoftmax` |
| ``char_softmax.py`` | :class:`CharSoftmax`: output embeddings from spellings (Jozefowicz et al. 2016) |
| ``shards.py`` | :func:`gather_shards`: a table computed in shares by data-parallel processes, with gradients |
| ``adaptive_softmax.py`` | :class:`AdaptiveSoftmax`: head and tail clusters for large vocabularies (Grave 2017) |
| ``registry.py`` | :data:`CORES`, :data:`OUTPUTS` and the decorators that fill them |
| ``fused_softmax.py`` | :func:`linear_cross_entropy`: the softmax loss in one sweep (CPU speed) |

``CORES`` and ``OUTPUTS`` (``registry.py``) map the names of ``model.core`` and ``model.output`` to
the classes, which register themselves with their options dataclass (``@register_core``,
``@register_output``); the config accepts exactly their names and each part's own options.
"""

from charlm.nn.adaptive_softmax import AdaptiveOptions, AdaptiveSoftmax, default_cutoffs, resolve_cutoffs
from charlm.nn.char_softmax import CharOutputOptions, CharSoftmax
from charlm.nn.core import RecurrentCore, State, detach_state, expand_state
from charlm.nn.dropout import Dropout, LockedDropout, drop_weights
from charlm.nn.encoder import CharCNN, WordEncoder
from charlm.nn.fused_softmax import linear_cross_entropy
from charlm.nn.highway import ACTIVATION_FUNCTIONS, Highway
from charlm.nn.lstm import LSTMCore, LSTMOptions
from charlm.nn.output import FullSoftmax, OutputLayer
from charlm.nn.registry import CORES, OUTPUTS, register_core, register_output
from charlm.nn.rhn import RHNCore, RHNOptions
from charlm.nn.tied_softmax import TiedOptions, TiedSoftmax

__all__ = [
    "ACTIVATION_FUNCTIONS",
    "AdaptiveOptions",
    "AdaptiveSoftmax",
    "CORES",
    "OUTPUTS",
    "CharCNN",
    "CharOutputOptions",
    "CharSoftmax",
    "Dropout",
    "FullSoftmax",
    "Highway",
    "LSTMCore",
    "LSTMOptions",
    "LockedDropout",
    "OutputLayer",
    "RHNCore",
    "RHNOptions",
    "RecurrentCore",
    "State",
    "TiedOptions",
    "TiedSoftmax",
    "WordEncoder",
    "default_cutoffs",
    "detach_state",
    "drop_weights",
    "expand_state",
    "linear_cross_entropy",
    "register_core",
    "register_output",
    "resolve_cutoffs",
]
