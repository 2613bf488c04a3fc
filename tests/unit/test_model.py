"""The model's pieces against hand-computed values, and its behaviour at the start of training."""

import contextlib
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from charlm.config import ModelConfig, load_config, shipped_configs
from charlm.model import CharLM
from charlm.nn import CharCNN, Dropout, Highway, LSTMOptions
from charlm.text import PAD_CHAR


def tiny_config(**changes) -> ModelConfig:
    base = ModelConfig(
        input="char",
        char_embed_dim=4,
        kernel_widths=[1, 2, 3],
        num_filters=[3, 4, 5],
        highway="highway",
        highway_layers=2,
        core=LSTMOptions(layers=2),
        hidden_size=16,
        dropout=0.0,
        vocab_size=30,
        char_vocab_size=12,
        max_word_length=7,
    )
    return dataclasses.replace(base, **changes)


def random_spellings(vocab_size=30, length=7, chars=12, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    spellings = torch.randint(6, chars, (vocab_size, length), generator=g)
    spellings[:, 0] = 1  # begin-of-word
    lengths = torch.randint(1, length - 1, (vocab_size,), generator=g)
    for i, n in enumerate(lengths.tolist()):
        spellings[i, n + 1] = 2  # end-of-word
        spellings[i, n + 2 :] = PAD_CHAR
    return spellings


def test_highway_matches_hand_computation():
    layer = Highway(size=2, num_layers=1, kind="highway", activation="relu")
    with torch.no_grad():
        # rows 0-1: transform W_H, rows 2-3: gate W_T
        layer.layers[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0], [0.5, 0.5], [0.0, 0.0]]))
        layer.layers[0].bias.copy_(torch.tensor([0.0, 1.0, 0.0, -2.0]))
    y = torch.tensor([[2.0, 3.0]])
    # transform: relu([2, -3 + 1]) = [2, 0]; gate: sigmoid([2.5, -2])
    t0, t1 = 1 / (1 + math.exp(-2.5)), 1 / (1 + math.exp(2.0))
    expected = torch.tensor([[t0 * 2 + (1 - t0) * 2, t1 * 0 + (1 - t1) * 3]])
    gates = []
    out = layer(y, gates)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(gates[0], torch.tensor([[t0, t1]]))


def test_highway_ablations_by_hand():
    y = torch.tensor([[1.0, -1.0]])
    w = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    for kind, expected in (("mlp", [[2.0, 0.0]]), ("residual", [[3.0, -1.0]])):
        layer = Highway(size=2, num_layers=1, kind=kind, activation="relu")
        with torch.no_grad():
            layer.layers[0].weight.copy_(w)
            layer.layers[0].bias.zero_()
        torch.testing.assert_close(layer(y), torch.tensor(expected))
    assert Highway(size=2, num_layers=0)(y).equal(y)


def test_gate_bias_and_initialisation():
    config = tiny_config(highway_gate_bias=-2.0, init_range=0.05)
    model = CharLM(config, random_spellings())
    for bias in model.highway.gate_biases():
        assert bias.min() >= -2.05 and bias.max() <= -1.95
    for layer in model.highway.layers:
        transform_bias = layer.bias[: config.input_size]
        assert transform_bias.abs().max() <= 0.05
    assert model.encoder.char_cnn.embedding.weight[PAD_CHAR].abs().max() == 0
    others = [p for n, p in model.named_parameters() if "highway" not in n]
    assert all(p.abs().max() <= 0.05 for p in others)
    # At the start the gates mostly carry: mean gate near sigmoid(-2) = 0.12.
    gates = []
    model.embed(torch.arange(30), gates)
    assert 0.08 < gates[0].mean().item() < 0.16


def test_convolutions_are_registered_parameters():
    cnn = CharCNN(char_vocab_size=12, embed_dim=4, widths=[1, 2, 3], filters=[3, 4, 5])
    names = {n for n, _ in cnn.named_parameters()}
    assert {"convs.0.weight", "convs.1.weight", "convs.2.weight"} <= names
    out = cnn(random_spellings()[:5])
    assert out.shape == (5, 12)


def test_char_cnn_is_max_over_positions_of_tanh_conv():
    cnn = CharCNN(char_vocab_size=12, embed_dim=4, widths=[2], filters=[3])
    chars = random_spellings()[:4]
    x = cnn.embedding(chars)  # [N, L, E]
    conv = cnn.convs[0]
    manual = []
    for pos in range(chars.size(1) - 1):
        window = x[:, pos : pos + 2, :].transpose(1, 2)  # [N, E, 2]
        manual.append(torch.tanh((window.unsqueeze(1) * conv.weight).sum((2, 3)) + conv.bias))
    expected = torch.stack(manual, dim=2).amax(dim=2)
    torch.testing.assert_close(cnn(chars), expected)


def test_convolutions_as_matmuls_equal_conv1d_outputs_and_gradients():
    # The CPU bf16 path computes every width's convolution as a product over unfolded windows:
    # in fp32 it must give Conv1d's outputs and gradients.
    torch.manual_seed(0)
    cnn = CharCNN(char_vocab_size=12, embed_dim=4, widths=[1, 2, 3], filters=[3, 4, 5])
    x = torch.randn(6, 7, 4)  # [N, L, E]
    grads = []
    for outputs in (cnn.convolve_as_matmuls(x), [conv(x.transpose(1, 2)).transpose(1, 2) for conv in cnn.convs]):
        cnn.zero_grad()
        assert [y.shape[1] for y in outputs] == [7, 6, 5]
        sum((y * torch.arange(y.numel()).view_as(y).sin()).sum() for y in outputs).backward()
        grads.append(([y.detach() for y in outputs], [p.grad.clone() for p in cnn.convs.parameters()]))
    for got, want in zip(grads[0][0] + grads[0][1], grads[1][0] + grads[1][1]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_char_cnn_under_bf16_autocast_is_close_to_fp32():
    torch.manual_seed(0)
    cnn = CharCNN(char_vocab_size=12, embed_dim=4, widths=[1, 2, 3], filters=[3, 4, 5])
    chars = random_spellings()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = cnn(chars)
    torch.testing.assert_close(low.float(), cnn(chars), rtol=0.02, atol=0.02)


def test_dropout_mask_rate_scale_and_gradient():
    torch.manual_seed(0)
    dropout = Dropout(0.3)
    x = torch.ones(200, 500, requires_grad=True)
    y = dropout(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.01  # 100,000 draws: sd 0.0015
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # gradient is the same mask and scale
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert dropout(x.bfloat16()).dtype == torch.bfloat16
    dropout.eval()
    assert dropout(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)


def test_unique_word_encoding_equals_per_token_encoding():
    model = CharLM(tiny_config(), random_spellings())
    words = torch.randint(0, 30, (3, 9))
    per_token = model.highway(model.encoder.char_cnn(model.encoder.spellings[words.flatten()])).view(3, 9, -1)
    torch.testing.assert_close(model.embed(words), per_token)


@pytest.mark.parametrize("input_kind", ["char", "word", "both"])
def test_initial_loss_is_log_vocab(input_kind):
    torch.manual_seed(0)
    vocab_size = 500
    config = tiny_config(input=input_kind, vocab_size=vocab_size, word_embed_dim=8)
    model = CharLM(config, random_spellings(vocab_size) if input_kind != "word" else None)
    words = torch.randint(0, vocab_size, (4, 20))
    logits, _ = model(words, model.initial_state(4))
    loss = F.cross_entropy(logits.flatten(0, 1), torch.randint(0, vocab_size, (80,)))
    assert abs(loss.item() - math.log(vocab_size)) < 0.1


def test_tiny_model_overfits_short_text():
    torch.manual_seed(0)
    model = CharLM(tiny_config(hidden_size=32), random_spellings())
    text = torch.tensor([[3, 7, 1, 9, 4, 4, 12, 18, 5, 29, 3, 7, 1, 9, 22, 0, 15]])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(300):
        logits, _ = model(text[:, :-1], model.initial_state(1))
        loss = F.cross_entropy(logits[0], text[0, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_chunked_forward_with_carried_state_equals_one_pass():
    """Carrying (h, c) between chunks is exactly running the whole sequence at once."""
    model = CharLM(tiny_config(), random_spellings()).eval()
    words = torch.randint(0, 30, (2, 21))
    full, _ = model(words, model.initial_state(2))
    hidden, pieces = model.initial_state(2), []
    for chunk in words.split(7, dim=1):
        logits, hidden = model(chunk, hidden)
        pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)


def test_single_lstm_bias_per_gate_stays_zero_and_keeps_the_rest_of_the_initialisation():
    torch.manual_seed(0)
    two = CharLM(tiny_config(), random_spellings())
    torch.manual_seed(0)
    one = CharLM(tiny_config(core=LSTMOptions(recurrent_bias=False)), random_spellings())
    recurrent = {f"core.lstm.bias_hh_l{k}" for k in range(2)}
    for (name, p), (_, q) in zip(two.named_parameters(), one.named_parameters()):
        if name in recurrent:
            assert q.abs().max() == 0 and not q.requires_grad
        else:  # the same draws as with two biases: the recurrent one is zeroed after its draw
            assert torch.equal(p, q), name
    assert two.num_parameters() - one.num_parameters() == 2 * 4 * 16
    optimizer = torch.optim.SGD(one.parameters(), lr=1.0)
    loss, _ = one(torch.randint(0, 30, (2, 5)), one.initial_state(2), torch.randint(0, 30, (2, 5)))
    loss.sum().backward()
    torch.nn.utils.clip_grad_norm_(one.parameters(), 5.0)
    optimizer.step()
    assert all(one.core.lstm.get_parameter(name.removeprefix("core.lstm.")).abs().max() == 0 for name in recurrent)
    assert one.core.lstm.bias_ih_l0.grad is not None and one.core.lstm.bias_ih_l0.grad.abs().max() > 0


def test_padding_row_gets_no_gradient():
    model = CharLM(tiny_config(), random_spellings())
    logits, _ = model(torch.randint(0, 30, (2, 5)), model.initial_state(2))
    logits.sum().backward()
    assert model.encoder.char_cnn.embedding.weight.grad[PAD_CHAR].abs().max() == 0


def test_padding_gradient_when_asked_counts_in_the_clipped_norm_and_changes_nothing_else():
    # The reference code's padding row takes a gradient (which its clipping norm includes) and is
    # zeroed after each update; set_padding_gradient(True) does that, the default freezes the row.
    words, targets = torch.randint(0, 30, (2, 5)), torch.randint(0, 30, (2, 5))

    def gradients(model):
        model.zero_grad()
        nll, _ = model(words, model.initial_state(2), targets)
        nll.sum().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    torch.manual_seed(0)
    model = CharLM(tiny_config(), random_spellings())
    frozen = gradients(model)
    model.set_padding_gradient(True)
    counted = gradients(model)
    pad = counted["encoder.char_cnn.embedding.weight"][PAD_CHAR]
    assert pad.abs().max() > 0 and frozen["encoder.char_cnn.embedding.weight"][PAD_CHAR].abs().max() == 0
    for name in frozen:  # every other gradient, the padding row's neighbours included, is unchanged
        other = counted[name].clone()
        if name == "encoder.char_cnn.embedding.weight":
            other[PAD_CHAR] = 0
        torch.testing.assert_close(other, frozen[name], rtol=0, atol=0)
    norm = lambda grads: torch.cat([g.flatten() for g in grads.values()]).norm()  # noqa: E731
    torch.testing.assert_close(norm(counted) ** 2, norm(frozen) ** 2 + pad.norm() ** 2)
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    assert model.encoder.char_cnn.embedding.weight[PAD_CHAR].abs().max() > 0  # the step moved it...
    model.zero_padding_embedding()
    assert model.encoder.char_cnn.embedding.weight[PAD_CHAR].abs().max() == 0  # ...and this puts it back
    model.set_padding_gradient(False)
    assert gradients(model)["encoder.char_cnn.embedding.weight"][PAD_CHAR].abs().max() == 0


def ptb_parameter_count(name: str) -> int:
    """Trained parameters of a shipped config at PTB's sizes: 10,000 words, 50 characters + 6
    reserved ids, longest word 19 + 2 markers."""
    config = load_config(name)  # a shipped config, by name
    model_config = dataclasses.replace(config.model, vocab_size=10000, char_vocab_size=56, max_word_length=21)
    spellings = torch.zeros(10000, 21, dtype=torch.long) if model_config.uses_spellings else None
    return CharLM(model_config, spellings).num_parameters()


def test_paper_configs_parameter_counts():
    expected = {
        "ptb-char-small": 5.3e6,
        "ptb-char-large": 19.4e6,
        "ptb-word-small": 4.65e6,
        "ptb-word-large": 19.8e6,
        "ptb-char-small-highway-2": 5.86e6,
    }
    for name, target in expected.items():
        count = ptb_parameter_count(name)
        assert abs(count / target - 1) < 0.03, (name, count)


@pytest.mark.parametrize("name", [n for n in shipped_configs() if "rhn" in n or "char-output" in n])
def test_beyond_the_paper_configs_keep_their_budget(name):
    """The budget rule: a recipe at the Char-Small budget has at most 5.5M trained parameters, one
    at the Char-Large budget at most 20M."""
    count = ptb_parameter_count(name)
    assert count <= (20e6 if "large" in name else 5.5e6), (name, count)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_softmax_layer_matches_cross_entropy(dtype):
    from charlm.nn import linear_cross_entropy

    torch.manual_seed(0)
    hidden = torch.randn(300, 16, requires_grad=True)
    decoder = torch.nn.Linear(16, 50)
    targets = torch.randint(0, 50, (300,))
    row_weights = torch.rand(300)  # a non-uniform incoming gradient per row
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        fused = linear_cross_entropy(hidden, decoder.weight, decoder.bias, targets)
        (fused * row_weights).sum().backward()
    grads = [hidden.grad.clone(), decoder.weight.grad.clone(), decoder.bias.grad.clone()]
    hidden.grad = decoder.weight.grad = decoder.bias.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        plain = F.cross_entropy(decoder(hidden).float(), targets, reduction="none")
        (plain * row_weights).sum().backward()
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, plain, **tol)
    for got, want in zip(grads, [hidden.grad, decoder.weight.grad, decoder.bias.grad]):
        torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "no input requires grad"])
def test_fused_softmax_layer_without_gradient_gives_the_same_loss(mode):
    # Scoring calls the fused layer where no gradient is wanted: it then only computes the loss.
    from charlm.nn import linear_cross_entropy

    torch.manual_seed(0)
    hidden, decoder, targets = torch.randn(600, 16), torch.nn.Linear(16, 50), torch.randint(0, 50, (600,))
    with_grad = linear_cross_entropy(hidden.requires_grad_(), decoder.weight, decoder.bias, targets)
    hidden = hidden.detach()
    if mode == "no input requires grad":
        decoder.requires_grad_(False)
    context = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}.get(mode, contextlib.nullcontext)
    with context():
        without = linear_cross_entropy(hidden, decoder.weight, decoder.bias, targets)
    assert with_grad.grad_fn is not None and without.grad_fn is None
    torch.testing.assert_close(without, with_grad.detach(), rtol=0, atol=0)


def test_loss_path_equals_logits_path():
    model = CharLM(tiny_config(), random_spellings())
    words, targets = torch.randint(0, 30, (2, 6)), torch.randint(0, 30, (2, 6))
    logits, _ = model(words, model.initial_state(2))
    nll, _ = model(words, model.initial_state(2), targets)
    torch.testing.assert_close(
        nll, F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(2, 6)
    )
