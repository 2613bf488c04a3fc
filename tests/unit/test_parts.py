"""The model parts of charlm.nn: the RHN core by hand, dropout variants, and every core x output
through the same protocol (initial loss, overfitting, exact scoring, a distribution that sums to 1)."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_model import random_spellings, tiny_config
from torch import nn

from charlm.errors import CharlmError
from charlm.model import CharLM
from charlm.nn import (
    CORES,
    OUTPUTS,
    CharSoftmax,
    LockedDropout,
    LSTMCore,
    RHNCore,
    TiedOptions,
    detach_state,
    expand_state,
)
from charlm.nn.rhn import RHNScan, rhn_reference, rhn_scan
from charlm.scoring import score_stream


def shipped(table: dict[str, type]) -> list[str]:
    """charlm's own parts (a test may register more: tests/integration/test_registry.py's toy GRU)."""
    return [name for name, part in table.items() if part.__module__.startswith("charlm.")]


COMBINATIONS = [(core, output) for core in shipped(CORES) for output in shipped(OUTPUTS)]


def part_config(core: str, output: str, core_options=None, output_options=None, **changes):
    """A tiny model with that core and output; ``*_options`` change the part's own options."""
    core_defaults = {"depth": 2} if core == "rhn" else {}
    output_defaults = {"num_filters": [10, 10, 10], "correction_dim": 8} if output == "char" else {}
    if output == "tied":  # tied to the input's word embedding, which must be of the core's size
        changes = {"input": "both", "word_embed_dim": changes.get("hidden_size", tiny_config().hidden_size), **changes}
    return tiny_config(
        core=CORES[core].Options(**{**core_defaults, **(core_options or {})}),
        output=OUTPUTS[output].Options(**{**output_defaults, **(output_options or {})}),
        **changes,
    )


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# ----------------------------------------------------------------------------- the RHN core


def test_rhn_step_of_depth_two_matches_hand_computation():
    """One time step, state size 1, input size 1: every number below is worked out by hand."""
    core = RHNCore(input_size=1, hidden_size=1, depth=2, gate_bias=0.0)
    with torch.no_grad():
        core.input_weight.weight.copy_(torch.tensor([[0.5], [1.0]]))  # W_H = 0.5, W_T = 1.0
        core.recurrent[0].weight.copy_(torch.tensor([[2.0], [-1.0]]))  # R_H,1 = 2, R_T,1 = -1
        core.recurrent[0].bias.copy_(torch.tensor([0.1, 0.2]))  # b_H,1, b_T,1
        core.recurrent[1].weight.copy_(torch.tensor([[-0.5], [3.0]]))  # R_H,2, R_T,2
        core.recurrent[1].bias.copy_(torch.tensor([0.0, -1.0]))
    x, s0 = 2.0, 0.3
    # micro-layer 1 reads the input: h = tanh(0.5*2 + 2*0.3 + 0.1), t = sigmoid(1*2 - 0.3 + 0.2)
    h1, t1 = math.tanh(1.0 + 0.6 + 0.1), sigmoid(2.0 - 0.3 + 0.2)
    s1 = h1 * t1 + s0 * (1 - t1)
    # micro-layer 2 does not: h = tanh(-0.5 * s1), t = sigmoid(3 * s1 - 1)
    h2, t2 = math.tanh(-0.5 * s1), sigmoid(3 * s1 - 1.0)
    s2 = h2 * t2 + s1 * (1 - t2)
    gates = []
    y, state = core(torch.tensor([[[x]]]), {"s": torch.tensor([[s0]])}, gates)
    assert y.item() == pytest.approx(s2, abs=1e-6)
    assert state["s"].item() == pytest.approx(s2, abs=1e-6)
    assert gates[0].flatten().tolist() == pytest.approx([t1, t2], abs=1e-6)


def test_rhn_transform_gate_bias_at_initialisation():
    torch.manual_seed(0)
    model = CharLM(part_config("rhn", "full", {"gate_bias": -3.0}, init_range=0.05), random_spellings())
    h = model.config.hidden_size
    for layer in model.core.recurrent:
        assert layer.bias[h:].min() >= -3.05 and layer.bias[h:].max() <= -2.95  # the transform gate
        assert layer.bias[:h].abs().max() <= 0.05  # the transform itself: untouched


def test_rhn_closed_transform_gate_carries_the_state_unchanged():
    """t = 0 (a hugely negative gate bias): s_l = s_{l-1} whatever the input: the coupled carry."""
    core = RHNCore(input_size=3, hidden_size=4, depth=3, gate_bias=-1e4)
    core.initialise_after_uniform()
    s0 = torch.randn(2, 4)
    y, state = core(torch.randn(2, 5, 3), {"s": s0.clone()})
    torch.testing.assert_close(state["s"], s0)
    torch.testing.assert_close(y, s0.unsqueeze(1).expand(2, 5, 4))


def test_rhn_dropout_masks_are_fixed_over_time():
    """With state dropout the state is multiplied by one mask [B, H] at every step: zero the
    weights so that the masked state is the only thing that moves s, and check it by hand."""
    torch.manual_seed(0)
    core = RHNCore(input_size=2, hidden_size=50, depth=1, state_dropout=0.5).train()
    with torch.no_grad():
        core.input_weight.weight.zero_()
        core.recurrent[0].weight.copy_(torch.cat([torch.eye(50), torch.zeros(50, 50)]))  # h = tanh(mask * s)
        core.recurrent[0].bias.copy_(torch.cat([torch.zeros(50), torch.full((50,), 50.0)]))  # t = 1
    s0 = torch.full((3, 50), 0.5)
    y, _ = core(torch.zeros(3, 4, 2), {"s": s0})
    dropped = y[:, 0] == 0  # the units whose mask is 0 at step 1...
    assert 0 < dropped.float().mean() < 1
    assert torch.equal(y[:, 1:] == 0, dropped.unsqueeze(1).expand(3, 3, 50))  # ...stay dropped at every step


def _scan_inputs(dtype, batch=3, steps=4, hidden=5, depth=3, masked=True):
    """Random inputs of the fused scan and its reference: (projected, s0, mask, layers)."""
    torch.manual_seed(1)
    layers = [nn.Linear(hidden, 2 * hidden).to(dtype) for _ in range(depth)]
    projected = torch.randn(batch, steps, 2 * hidden, dtype=dtype, requires_grad=True)
    s0 = torch.randn(batch, hidden, dtype=dtype, requires_grad=True)
    mask = (torch.rand(batch, hidden) > 0.3).to(dtype) * 2.0 if masked else None
    return projected, s0, mask, layers


def _scan_grads(scan, projected, s0, mask, layers):
    """The outputs of ``scan`` and the gradients of a loss that uses every output and the last state."""
    outputs, last = scan(projected, s0, mask, [(layer.weight, layer.bias) for layer in layers])
    weights = torch.linspace(-1, 1, outputs.numel(), dtype=outputs.dtype).view_as(outputs)
    loss = (outputs * weights).sum() + (last**2).sum()
    params = [projected, s0] + [p for layer in layers for p in layer.parameters()]
    return outputs, last, torch.autograd.grad(loss, params)


@pytest.mark.parametrize("masked", [True, False])
def test_rhn_fused_scan_matches_the_step_by_step_loop(masked):
    """The one-node scan (hand-written backward) against autograd through the plain loop, float32:
    the same operations in the same order, so the same forward pass up to the last bit or so (seen
    on an AMD EPYC without a mask: the matrix product probably rounds by the alignment of its
    operands, and the scan reads its state from one preallocated buffer) and the same gradients up to rounding."""
    inputs = _scan_inputs(torch.float32, masked=masked)
    out_ref, last_ref, grads_ref = _scan_grads(rhn_reference, *inputs)
    out, last, grads = _scan_grads(rhn_scan, *inputs)
    torch.testing.assert_close(out, out_ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(last, last_ref, rtol=1e-6, atol=1e-7)
    for grad, grad_ref in zip(grads, grads_ref):
        torch.testing.assert_close(grad, grad_ref, rtol=1e-5, atol=1e-6)


def test_rhn_fused_scan_passes_a_double_precision_gradient_check():
    projected, s0, mask, layers = _scan_inputs(torch.float64, batch=2, steps=3, hidden=3, depth=2)
    params = [p for layer in layers for p in (layer.weight, layer.bias)]
    assert torch.autograd.gradcheck(lambda *a: RHNScan.apply(a[0], a[1], mask, None, *a[2:]), (projected, s0, *params))


def test_rhn_fused_scan_under_bf16_autocast_stays_near_the_loop():
    """Under autocast both run the products in bf16 and keep the state in float32: they agree to
    bf16 rounding (a few per cent on gradients summed over a chunk), not to the bit."""
    inputs = _scan_inputs(torch.float32, steps=6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_ref, _, grads_ref = _scan_grads(rhn_reference, *inputs)
        out, _, grads = _scan_grads(rhn_scan, *inputs)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, out_ref, rtol=2e-2, atol=2e-2)
    for grad, grad_ref in zip(grads, grads_ref):
        assert grad.dtype == grad_ref.dtype
        assert (grad.float() - grad_ref.float()).norm() <= 0.05 * grad_ref.float().norm() + 1e-3


def test_rhn_core_fused_and_unfused_train_the_same():
    """The switch the core exposes: with state dropout on, both paths take the same mask and give
    the same outputs and the same parameter gradients."""
    cores = []
    for fused in (True, False):
        torch.manual_seed(2)
        core = RHNCore(input_size=4, hidden_size=6, depth=2, state_dropout=0.3, input_dropout=0.2, fused=fused).train()
        torch.manual_seed(3)
        y, state = core(torch.randn(2, 5, 4), core.initial_state(2))
        (y.sum() + state["s"].sum()).backward()
        cores.append((y, core))
    (y_fused, fused), (y_loop, loop) = cores
    assert torch.equal(y_fused, y_loop)
    for p_fused, p_loop in zip(fused.parameters(), loop.parameters()):
        torch.testing.assert_close(p_fused.grad, p_loop.grad, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- dropout variants


def test_rhn_weight_drop_masks_the_recurrent_weights_in_training_only():
    """DropConnect on the RHN's recurrent matrices: a new mask per call in training, the plain
    weights in evaluation, the parameters themselves untouched; the fused scan and the loop see the
    same dropped weights and give the same gradients."""
    cores = []
    for fused in (True, False):
        torch.manual_seed(2)
        core = RHNCore(input_size=4, hidden_size=6, depth=2, weight_drop=0.5, fused=fused).train()
        x, state = torch.randn(2, 5, 4), core.initial_state(2)
        before = [layer.weight.detach().clone() for layer in core.recurrent]
        torch.manual_seed(3)
        a, _ = core(x, state)
        b, _ = core(x, state)
        assert not torch.allclose(a, b)  # a new mask per call
        torch.manual_seed(3)
        y, last = core(x, state)
        (y.sum() + last["s"].sum()).backward()
        assert all(torch.equal(layer.weight.detach(), w) for layer, w in zip(core.recurrent, before))
        core.eval()
        plain = RHNCore(input_size=4, hidden_size=6, depth=2).eval()
        plain.load_state_dict(core.state_dict())
        assert torch.equal(core(x, state)[0], plain(x, state)[0])  # evaluation: no DropConnect
        cores.append((y, core))
    (y_fused, fused), (y_loop, loop) = cores
    torch.testing.assert_close(y_fused, y_loop)
    for p_fused, p_loop in zip(fused.parameters(), loop.parameters()):
        torch.testing.assert_close(p_fused.grad, p_loop.grad, rtol=1e-5, atol=1e-6)


def test_rhn_weight_drop_reaches_the_core_from_the_config_and_is_checked():
    from charlm.config import load_config

    config = load_config("tiny", ["model.core=rhn", "model.core.weight_drop=0.4"]).model
    model = CharLM(
        dataclasses.replace(config, vocab_size=12, char_vocab_size=9, max_word_length=5), random_spellings(12, 5, 9)
    )
    assert model.core.weight_drop == 0.4
    with pytest.raises(CharlmError, match="model.core.weight_drop"):
        load_config("tiny", ["model.core=rhn", "model.core.weight_drop=1.5"])


def test_locked_dropout_uses_one_mask_across_time():
    torch.manual_seed(0)
    drop = LockedDropout(0.5).train()
    y = drop(torch.ones(4, 30, 16))
    kept = y != 0
    assert torch.equal(kept, kept[:, :1].expand_as(kept))  # the same positions at every step
    assert 0.3 < kept[:, 0].float().mean() < 0.7  # and a real mask, scaled by 1 / (1 - p)
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    drop.eval()
    x = torch.randn(2, 3, 4)
    assert drop(x) is x


def test_weight_drop_changes_the_recurrent_weights_in_training_only():
    torch.manual_seed(0)
    core = LSTMCore(5, 6, 2, dropout=0.0, weight_drop=0.5)
    x, state = torch.randn(2, 4, 5), core.initial_state(2)
    core.train()
    a, _ = core(x, state)
    b, _ = core(x, state)
    assert not torch.allclose(a, b)  # a new DropConnect mask per call
    core.eval()
    c, _ = core(x, state)
    reference = torch.nn.LSTM(5, 6, 2, batch_first=True)
    reference.load_state_dict(core.lstm.state_dict())
    torch.testing.assert_close(c, reference(x)[0])  # eval: the plain weights
    # In training the dropped matrix is what the recurrence sees; the parameter itself is unchanged.
    before = core.lstm.weight_hh_l0.detach().clone()
    core.train()
    core(x, state)[0].sum().backward()
    assert torch.equal(core.lstm.weight_hh_l0.detach(), before)
    assert core.lstm.weight_hh_l0.grad is not None


def test_layer_by_layer_lstm_equals_the_fused_call_without_dropout():
    """locked_dropout with p = 0 takes the layer-by-layer path: the same numbers as one nn.LSTM call."""
    torch.manual_seed(0)
    fused = LSTMCore(5, 6, 3, dropout=0.0).train()
    by_layer = LSTMCore(5, 6, 3, dropout=0.0, locked_dropout=True).train()
    by_layer.load_state_dict(fused.state_dict())
    x, state = torch.randn(2, 7, 5), fused.initial_state(2)
    (a, sa), (b, sb) = fused(x, state), by_layer(x, state)
    torch.testing.assert_close(a, b)
    for name in sa:
        torch.testing.assert_close(sa[name], sb[name])


# ----------------------------------------------------------------------------- every core x output


@pytest.mark.parametrize("core,output", COMBINATIONS)
def test_initial_loss_is_near_log_vocab(core, output):
    torch.manual_seed(0)
    vocab_size = 500
    model = CharLM(part_config(core, output, vocab_size=vocab_size), random_spellings(vocab_size))
    words, targets = torch.randint(0, vocab_size, (4, 20)), torch.randint(0, vocab_size, (4, 20))
    nll, _ = model(words, model.initial_state(4), targets)
    assert abs(nll.mean().item() - math.log(vocab_size)) < 0.15


@pytest.mark.parametrize("core,output", COMBINATIONS)
def test_every_core_and_output_overfits_a_short_text(core, output):
    torch.manual_seed(0)
    model = CharLM(part_config(core, output, hidden_size=32), random_spellings())
    text = torch.tensor([[3, 7, 1, 9, 4, 4, 12, 18, 5, 29, 3, 7, 1, 9, 22, 0, 15]])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(500):
        nll, _ = model(text[:, :-1], model.initial_state(1), text[:, 1:])
        loss = nll.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1


@pytest.mark.parametrize("core,output", COMBINATIONS)
def test_log_probabilities_sum_to_one_and_match_the_loss(core, output):
    torch.manual_seed(0)
    model = CharLM(part_config(core, output), random_spellings()).eval()
    words, targets = torch.randint(0, 30, (2, 6)), torch.randint(0, 30, (2, 6))
    log_probs, _ = model(words, model.initial_state(2))  # [2, 6, V]
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 6))
    nll, _ = model(words, model.initial_state(2), targets)
    torch.testing.assert_close(nll, -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("core,output", COMBINATIONS)
def test_exact_scoring_equals_a_token_by_token_loop(core, output):
    torch.manual_seed(0)
    model = CharLM(part_config(core, output), random_spellings()).eval()
    ids = np.random.default_rng(0).integers(0, 30, 120)
    with torch.inference_mode():
        state, previous, nll = model.initial_state(1), 0, 0.0
        for target in ids.tolist():
            log_probs, state = model(torch.tensor([[previous]]), state)
            nll -= log_probs[0, 0, target].item()
            previous = target
    expected = math.exp(nll / len(ids))
    for chunk_len, pipeline in ((1, False), (7, True), (50, False), (2048, True)):
        got = score_stream(model, ids, 0, chunk_len=chunk_len, pipeline=pipeline).perplexity
        assert got == pytest.approx(expected, rel=1e-4), (chunk_len, pipeline)


@pytest.mark.parametrize("core", list(CORES))
def test_state_is_named_tensors_that_detach_and_expand(core):
    model = CharLM(part_config(core, "full"), random_spellings())
    state = model.initial_state(3)
    _, state = model(torch.randint(0, 30, (3, 4)), state, torch.randint(0, 30, (3, 4)))
    assert all(t.requires_grad for t in state.values())
    detached = detach_state(state)
    assert state.keys() == detached.keys() and not any(t.requires_grad for t in detached.values())
    one = {name: t.narrow(model.core.state_batch_dims[name], 0, 1) for name, t in detached.items()}
    five = expand_state(model.core, one, 5)
    for name, tensor in five.items():
        assert tensor.size(model.core.state_batch_dims[name]) == 5


def test_char_output_scores_any_spelling_like_a_vocabulary_word():
    """The spelling-based output gives an unseen spelling a logit; for a vocabulary word without
    the per-word correction and free bias it is exactly that word's logit."""
    torch.manual_seed(0)
    model = CharLM(
        part_config("lstm", "char", output_options={"correction_dim": 0, "word_bias": False}), random_spellings()
    ).eval()
    output: CharSoftmax = model.output
    hidden = torch.randn(4, model.config.hidden_size)
    words = torch.tensor([0, 5, 9, 29])
    weight, bias = output.word_table()
    expected = (hidden * weight[words]).sum(-1) + bias[words]
    torch.testing.assert_close(output.spelling_logits(hidden, model.encoder.spellings[words]), expected)
    # and padding after the end-of-word marker changes nothing (the output's encoder ignores it)
    padded = F.pad(model.encoder.spellings[words], (0, 5), value=0)
    torch.testing.assert_close(output.spelling_logits(hidden, padded), expected)


def test_char_output_table_is_centred_and_gives_the_uncentred_distribution():
    """The word table has mean zero over the vocabulary (no common offset for bf16 logits to round
    away the differences between words), and its log-probabilities are those of the plain
    formula ``[e_w; b_w] = P f(spelling_w) + Q c_w (+ a_w)``, offset included."""
    torch.manual_seed(0)
    model = CharLM(part_config("lstm", "char", output_options={"correction_dim": 4}), random_spellings()).eval()
    output: CharSoftmax = model.output
    with torch.no_grad():
        output.word_bias.uniform_(-3, 3)
        output.correction.weight.uniform_(0, 2)  # corrections with a mean of their own
        weight, bias = output.word_table()
        torch.testing.assert_close(weight.mean(0), torch.zeros(weight.size(1)), atol=1e-5, rtol=0)
        torch.testing.assert_close(bias.mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
        plain = (
            output.projection(output.spelling_features(output.spellings))
            + output.correction_projection(output.correction.weight)
            + 5.0
        )  # any common offset
        hidden = torch.randn(6, model.config.hidden_size)
        expected = torch.log_softmax(hidden @ plain[:, :-1].t() + plain[:, -1] + output.word_bias, dim=-1)
        torch.testing.assert_close(output.log_probs(hidden), expected, atol=1e-5, rtol=1e-5)


def test_char_output_free_bias_of_an_unseen_spelling_is_that_of_the_rarest_words():
    torch.manual_seed(0)
    model = CharLM(part_config("lstm", "char", output_options={"correction_dim": 0}), random_spellings()).eval()
    output: CharSoftmax = model.output
    hidden, words = torch.randn(4, model.config.hidden_size), torch.tensor([0, 5, 9, 29])
    weight, bias = output.word_table()
    rarest = output.word_bias[-3:].mean()  # the rarest tenth of 30 words
    expected = (hidden * weight[words]).sum(-1) + bias[words] - output.word_bias[words] + rarest
    torch.testing.assert_close(output.spelling_logits(hidden, model.encoder.spellings[words]), expected)


def test_shared_encoder_output_uses_the_input_weights():
    torch.manual_seed(0)
    model = CharLM(part_config("lstm", "char", output_options={"share_encoder": True}), random_spellings())
    assert model.output.char_cnn is None
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith("output.") and "char_cnn" in n for n in names)
    nll, _ = model(torch.randint(0, 30, (2, 5)), model.initial_state(2), torch.randint(0, 30, (2, 5)))
    nll.sum().backward()
    # the input encoder gets gradient from the output side too: even a word never read as input
    assert model.encoder.char_cnn.convs[0].weight.grad.abs().sum() > 0


def test_spelled_word_in_place_of_unk_completes_a_distribution():
    """The out-of-vocabulary word takes <unk>'s place: its probability plus every other word's
    (normalised the same way) is 1."""
    torch.manual_seed(0)
    model = CharLM(part_config("lstm", "char"), random_spellings()).eval()
    output: CharSoftmax = model.output
    hidden, unk = torch.randn(3, model.config.hidden_size), 0
    chars = random_spellings(3, seed=7)  # three spellings the vocabulary does not hold
    spelled = output.spelling_log_probs(hidden, chars, unk)
    weight, bias = output.word_table()
    logits = hidden @ weight.t() + bias
    others = torch.cat([logits[:, :unk], logits[:, unk + 1 :]], dim=1)
    total = spelled.exp() + (
        others
        - torch.logsumexp(torch.cat([others, output.spelling_logits(hidden, chars)[:, None]], 1), 1, keepdim=True)
    ).exp().sum(1)
    torch.testing.assert_close(total, torch.ones(3))


def test_column_scoring_of_an_rhn_starts_column_zero_from_zero():
    from charlm.scoring import score_columns

    torch.manual_seed(0)
    model = CharLM(part_config("rhn", "full"), random_spellings()).eval()
    ids = np.random.default_rng(0).integers(0, 30, 90)
    exact = score_stream(model, ids, 0, per_token=True, pipeline=False)
    approx = score_columns(model, ids, 0, columns=3, warmup=10, per_token=True)
    np.testing.assert_allclose(approx.logprobs[:30], exact.logprobs[:30], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pipeline", [False, True])
def test_scoring_in_segments_equals_scoring_the_stream_whole(monkeypatch, pipeline):
    """A long stream is read from its (memory-mapped) ids a segment at a time, each segment's
    distinct words encoded once: the same number as encoding the whole stream at once."""
    torch.manual_seed(0)
    model = CharLM(part_config("lstm", "full"), random_spellings()).eval()
    ids = np.random.default_rng(1).integers(0, 30, 700)
    whole = score_stream(model, ids, 0, chunk_len=50, per_token=True, pipeline=pipeline)
    monkeypatch.setattr("charlm.scoring.SEGMENT_TOKENS", 120)  # 2 chunks per segment, 7 segments
    pieces = score_stream(model, ids, 0, chunk_len=50, per_token=True, pipeline=pipeline)
    assert pieces.tokens == whole.tokens == 700
    np.testing.assert_allclose(pieces.logprobs, whole.logprobs, rtol=1e-5, atol=1e-6)
    assert pieces.perplexity == pytest.approx(whole.perplexity, rel=1e-6)


def test_adaptive_softmax_default_cutoffs_and_uniform_start():
    from charlm.nn import AdaptiveSoftmax, default_cutoffs

    assert default_cutoffs(10_000) == [4000]
    assert default_cutoffs(100_000) == [20_000, 60_000]
    assert default_cutoffs(250_000) == [20_000, 60_000, 180_000]
    layer = AdaptiveSoftmax(16, 1000, [200, 600], 4.0)
    with torch.no_grad():
        for p in layer.parameters():
            p.zero_()  # the limit of a small uniform initialisation
        layer.initialise_after_uniform()
        log_probs = layer.log_probs(torch.randn(3, 16))
    torch.testing.assert_close(log_probs, torch.full((3, 1000), -math.log(1000)))  # uniform over the words


def test_adaptive_softmax_rejects_cutoffs_outside_the_vocabulary():
    from charlm.errors import CharlmError

    for cutoffs in ([30], [10, 5], [0, 10]):
        with pytest.raises(CharlmError, match="model.output.cutoffs"):
            CharLM(part_config("lstm", "adaptive", output_options={"cutoffs": cutoffs}), random_spellings())


def test_char_output_encoder_starts_with_features_that_tell_words_apart():
    """The output's own char-CNN is initialised as PyTorch does, not U(-0.05, 0.05): under the
    latter every spelling gets nearly the same features and training stalls (docs/model-parts.md)."""
    torch.manual_seed(0)
    model = CharLM(part_config("lstm", "char"), random_spellings())
    with torch.no_grad():
        spread = model.output.spelling_features(model.encoder.spellings).std(dim=0).mean().item()
    assert model.output.char_cnn.embedding.weight.abs().max() > 1.0  # N(0, 1), not U(-0.05, 0.05)
    assert spread > 0.05  # the paper's initialisation gives about 0.005 on PTB


# ----------------------------------------------------------------------------- the tied output


def test_tied_output_is_the_input_embedding_table_held_once():
    """The tied softmax owns only its biases: its weight is the input's word embedding, so the model
    has V x H parameters fewer than with the full softmax, its state holds the table once, and the
    output's gradient reaches it (tests/integration/test_hub.py: an export keeps the tie)."""
    torch.manual_seed(0)
    full = CharLM(part_config("lstm", "full", input="both", word_embed_dim=16), random_spellings())
    tied = CharLM(part_config("lstm", "tied"), random_spellings())
    vocab_size, hidden = tied.config.vocab_size, tied.config.hidden_size
    assert full.num_parameters() - tied.num_parameters() == vocab_size * hidden
    assert tied.output.weight is tied.encoder.word_embedding.weight
    assert [name for name in tied.state_dict() if name.startswith("output.")] == ["output.bias"]

    words = torch.zeros(1, 3, dtype=torch.long)  # the input sees word 0 only
    nll, _ = tied(words, tied.initial_state(1), torch.tensor([[5, 6, 7]]))
    nll.sum().backward()
    grad = tied.encoder.word_embedding.weight.grad
    assert grad[5:8].abs().sum() > 0  # rows only the output used got their gradient


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"input": "char"}, "tied needs a word embedding to tie to"),
        ({"input": "both", "word_embed_dim": 8}, "word_embed_dim \\(8\\) equal to model.hidden_size \\(16\\)"),
    ],
)
def test_tied_output_without_a_matching_word_embedding_is_a_config_error(changes, message):
    with pytest.raises(CharlmError, match=message):
        tiny_config(output=TiedOptions(), **changes)
