"""charlm's fast path computes what the plain implementation computes: same loss, same gradients."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_model import random_spellings, tiny_config

from charlm.model import CharLM
from charlm.plain_model import PlainCharLM, plain_model_copy, plain_stream_score
from charlm.scoring import score_stream


def twin_models(**changes):
    torch.manual_seed(0)
    config = tiny_config(dropout=0.0, **changes)
    spellings = random_spellings()
    model = CharLM(config, spellings)
    plain = plain_model_copy(PlainCharLM(config, spellings), model)
    return model, plain


def plain_gradients(model, words, targets):
    logits, _ = model(words, tuple(torch.zeros(2, words.size(0), 16) for _ in range(2)))
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets).sum(1).mean()
    loss.backward()
    return loss


def plain_grad_of(plain, name):
    """The gradient of the plain model's parameter that corresponds to charlm's ``name``."""
    if name.startswith("highway.layers."):
        i, kind = int(name.split(".")[2]), name.split(".")[-1]
        t = getattr(plain.transforms[i], kind).grad
        g = getattr(plain.gates[i], kind).grad
        return torch.cat([t, g]) if t.dim() == 1 else torch.cat([t, g], dim=0)
    mapped = (
        name.replace("encoder.char_cnn.embedding", "embedding")
        .replace("encoder.char_cnn.convs", "convs")
        .replace("core.lstm.", "lstm.")
        .replace("output.decoder.", "decoder.")
    )
    return dict(plain.named_parameters())[mapped].grad


@pytest.mark.parametrize("highway_layers", [1, 2])
def test_fp32_fast_path_equals_plain_loss_and_gradients(highway_layers):
    model, plain = twin_models(highway_layers=highway_layers)
    words, targets = torch.randint(0, 30, (3, 9)), torch.randint(0, 30, (3, 9))
    nll, _ = model(words, model.initial_state(3), targets)
    loss = nll.sum(1).mean()
    loss.backward()
    plain_loss = plain_gradients(plain, words, targets)
    torch.testing.assert_close(loss, plain_loss, rtol=1e-5, atol=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain_grad_of(plain, name), rtol=1e-4, atol=1e-6, msg=name)


def test_bf16_fast_path_close_to_fp32_plain():
    model, plain = twin_models()
    words, targets = torch.randint(0, 30, (3, 9)), torch.randint(0, 30, (3, 9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nll, _ = model(words, model.initial_state(3), targets)
        loss = nll.sum(1).mean()
    loss.backward()
    plain_loss = plain_gradients(plain, words, targets)
    torch.testing.assert_close(loss, plain_loss, rtol=1e-2, atol=1e-2)
    grad, plain_grad = model.output.decoder.weight.grad, plain.decoder.weight.grad
    cosine = F.cosine_similarity(grad.flatten(), plain_grad.flatten(), dim=0)
    assert cosine > 0.99


def test_exact_stream_score_equals_plain_reference():
    model, plain = twin_models()
    ids = np.random.default_rng(0).integers(0, 30, 200)
    nll, n = plain_stream_score(plain, ids, start_id=1)
    score = score_stream(model, ids, start_id=1, chunk_len=64)
    assert score.tokens == n == 200
    assert abs(score.nll - nll) / nll < 1e-5


def test_word_models_have_no_char_path():
    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(), input="word", word_embed_dim=8, highway="none")
    model = CharLM(config)
    assert model.encoder.char_cnn is None and not hasattr(model.encoder, "spellings")


def test_benchmark_runs_and_its_two_evaluations_agree(tmp_path):
    # The benchmark on the tiny config: it must run end to end, and the plain reference and
    # charlm's scoring of the same weights must give the same exact perplexity.
    import json

    from conftest import prepare_grammar_corpus

    from charlm.benchmark import main

    data = prepare_grammar_corpus(tmp_path, 200, 20)
    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "--data-dir",
                str(data),
                "--configs",
                "tiny",
                "--warmup",
                "1",
                "--steps",
                "1",
                "--repeats",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert result["machine"]["allocator"].startswith("freed memory kept")
    (config,) = result["configs"]
    assert set(config["train_tokens_per_sec"]) == {"plain fp32", "charlm fp32", "charlm bf16"}
    assert all(v > 0 for v in config["train_tokens_per_sec"].values())
    e = config["eval"]
    assert abs(e["charlm_ppl"] - e["plain_ppl"]) / e["plain_ppl"] < 1e-5, e
    # Pipelined and sequential: the same operations, but the sequential softmax runs on two threads,
    # which may reduce a short last block in another order (last-bit differences at most).
    assert e["charlm_sequential_ppl"] == pytest.approx(e["charlm_ppl"], rel=1e-6), e
    # bf16 scoring and the column approximation score the same tokens: close to the exact number.
    assert e["charlm_bf16_ppl"] == pytest.approx(e["charlm_ppl"], rel=0.02), e
    assert e["columns"] == 20 and e["charlm_columns_ppl"] == pytest.approx(e["charlm_ppl"], rel=0.05), e
    assert e["charlm_speedup"] > 0 and e["charlm_bf16_speedup"] > 0, e  # from unrounded times, never 0/0
    assert config["generate_ms_per_word"] > 0


def test_keep_freed_memory_is_accepted_by_glibc():
    import platform

    from charlm.memory import keep_freed_memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the setting exists only in glibc")
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # applied once, cached
