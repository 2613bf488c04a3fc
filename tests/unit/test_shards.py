"""The char output's vocabulary table computed in shares by two processes (charlm.nn.shards): each
process encodes only its share of the spellings, and the averaged gradients equal those of one
process computing the whole table for both processes' data."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_model import random_spellings
from test_parts import part_config

from charlm.model import CharLM

VOCAB = 31  # odd: the second process's share is one row shorter


def build_model() -> CharLM:
    torch.manual_seed(0)
    return CharLM(part_config("lstm", "char", vocab_size=VOCAB), random_spellings(vocab_size=VOCAB)).train()


def batch(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(6, 16, generator=g), torch.randint(0, VOCAB, (6,), generator=g)


def gradients(model: CharLM) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.output.named_parameters() if p.grad is not None}


def worker(rank: int, store: str, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        model = build_model()
        encoded = []
        original = model.output.spelling_features
        model.output.spelling_features = lambda chars: encoded.append(chars.size(0)) or original(chars)
        hidden, targets = batch(rank)
        model.output.nll(hidden, targets).mean().backward()
        for p in model.output.parameters():  # what data-parallel training does: average the gradients
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= 2
        results[rank] = (sum(encoded), gradients(model))
    finally:
        dist.destroy_process_group()


def test_two_processes_encode_half_the_vocabulary_each_and_get_the_whole_gradient(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(worker, args=(str(tmp_path / "store"), results), nprocs=2)
    assert [results[0][0], results[1][0]] == [16, 15]  # each encoded its share only
    # One process, the whole table, the mean of both processes' losses.
    model = build_model()
    loss = sum(model.output.nll(*batch(rank)).mean() for rank in (0, 1)) / 2
    loss.backward()
    expected = gradients(model)
    for rank in (0, 1):
        got = results[rank][1]
        assert got.keys() == expected.keys()
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
