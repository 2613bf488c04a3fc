"""Training: the text stream, the learning-rate rule, and real runs through the CLI and the launcher."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import prepare_grammar_corpus
from safetensors.torch import load_file

from charlm.cli import main
from charlm.config import CONFIG_DIR, TrainConfig
from charlm.corpus import TextStream
from charlm.state import complete_checkpoints
from charlm.train import should_decay

REPO = Path(__file__).resolve().parents[2]
TINY = CONFIG_DIR / "tiny.yaml"
# A very small model so that the end-to-end runs take seconds.
SMALL = [
    "model.kernel_widths=[1,2,3]",
    "model.num_filters=[8,8,8]",
    "model.hidden_size=24",
    "train.batch_size=4",
    "train.seq_len=8",
    "train.log_every=1",
]


def test_stream_rows_continue_the_text():
    """Row r of chunk k+1 continues row r of chunk k: concatenating a row's chunks gives a
    contiguous piece of the stream, and targets are inputs shifted by one. A shuffled or
    interleaved batching fails this."""
    ids = np.arange(1000, dtype=np.int32)
    stream = TextStream(ids, total_rows=6, seq_len=7, first_row=2, num_rows=3)
    cols = (1000 - 1) // 6
    for r in range(3):
        row = torch.cat([stream.chunk(k)[0][r] for k in range(stream.num_chunks)])
        start = (2 + r) * cols
        assert row.tolist() == list(range(start, start + 7 * stream.num_chunks))
        target = torch.cat([stream.chunk(k)[1][r] for k in range(stream.num_chunks)])
        assert target.tolist() == [t + 1 for t in row.tolist()]


def test_process_shares_partition_the_single_process_batch():
    ids = np.random.default_rng(0).integers(0, 50, 5000).astype(np.int32)
    whole = TextStream(ids, total_rows=8, seq_len=5, first_row=0, num_rows=8)
    halves = [TextStream(ids, total_rows=8, seq_len=5, first_row=4 * p, num_rows=4) for p in range(2)]
    for k in range(whole.num_chunks):
        assert torch.equal(whole.chunk(k)[0], torch.cat([h.chunk(k)[0] for h in halves]))


def test_learning_rate_rule_matches_reference():
    tc = TrainConfig()  # decay when valid ppl improves by <= 1.0 over the previous epoch, from epoch 3
    assert not should_decay([300.0], tc)
    assert not should_decay([300.0, 299.9], tc)  # epoch 2: too early
    assert should_decay([300.0, 250.0, 249.5], tc)
    assert not should_decay([300.0, 250.0, 240.0], tc)
    best = TrainConfig(decay_compare="best")
    assert should_decay([300.0, 200.0, 260.0, 230.0], best)  # better than previous, not than best
    assert not should_decay([300.0, 200.0, 260.0, 230.0], tc)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small prepared corpus of sentences from a tiny grammar."""
    root = tmp_path_factory.mktemp("corpus")
    return prepare_grammar_corpus(root, 400, 40)


def run_train(corpus, output_dir, *overrides, resume=False):
    args = [
        "train",
        "--config",
        str(TINY),
        "--data-dir",
        str(corpus),
        "--output-dir",
        str(output_dir),
        *SMALL,
        *overrides,
    ]
    if resume:
        args.append("--resume")
    return main(args)


def newest_weights(output_dir):
    return load_file(str(complete_checkpoints(Path(output_dir))[-1] / "model.safetensors"))


def test_train_end_to_end_outputs(corpus, tmp_path):
    out = tmp_path / "run"
    # Adam (a config field like any other) learns the grammar within two short epochs.
    assert run_train(corpus, out, "train.max_epochs=2", "train.optimizer=adam", "train.lr=0.01") == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert {"epoch", "lr", "train_ppl", "valid_ppl", "tokens_per_sec", "seconds"} <= set(r)
    assert records[1]["valid_ppl"] < records[0]["valid_ppl"] < 8  # 20 words + <eos>: it learns the grammar
    for name in ("model.safetensors", "config.json", "vocab.json"):
        assert (out / "best" / name).is_file()
    assert len(complete_checkpoints(out)) == 2
    # Refuses to overwrite a run without --resume.
    assert run_train(corpus, out, "train.max_epochs=2") == 2


def test_max_steps_still_validates_and_exports(corpus, tmp_path):
    out = tmp_path / "short"
    assert run_train(corpus, out, "train.max_steps=3") == 0
    (record,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert record["step"] == 3 and 0 < record["epoch"] < 1
    assert (out / "best" / "model.safetensors").is_file()


def test_a_test_record_names_the_run_it_scores(corpus, tmp_path, capsys):
    """``perplexity --json`` on best/ carries the identity the training run exported with it."""
    from charlm.checkpoint import load_model
    from charlm.runtime import device_name, source_commit

    out = tmp_path / "named"
    assert run_train(corpus, out, "train.max_epochs=1", "train.seed=7", "train.mixed_precision=fp32") == 0
    capsys.readouterr()
    assert (
        main(["perplexity", "--checkpoint", str(out / "best"), "--data-dir", str(corpus), "--split", "test", "--json"])
        == 0
    )
    record = json.loads(capsys.readouterr().out)
    trained = record["model"]
    assert trained["config"] == str(TINY) and trained["seed"] == 7 and trained["epochs"] == 1
    assert trained["precision"] == "fp32" and trained["processes"] == 1
    assert trained["device"] == record["scored_on"] == device_name("cpu")
    assert trained["commit"] == source_commit()
    assert trained["parameters"] == load_model(out / "best")[0].num_parameters() > 0


def test_clip_padding_gradient_lets_the_row_learn_then_zeroes_it_after_every_update(corpus, tmp_path, monkeypatch):
    # How the row's gradient enters the clipped norm is checked in test_model; here, that training
    # turns it on and puts the row back to zero after each update, and only when asked.
    from charlm.model import CharLM

    calls = []
    original = CharLM.zero_padding_embedding

    def spy(model):
        calls.append(model.encoder.char_cnn.embedding.padding_idx)
        original(model)

    monkeypatch.setattr(CharLM, "zero_padding_embedding", spy)
    assert run_train(corpus, tmp_path / "frozen", "train.max_steps=3", "train.clip_padding_gradient=false") == 0
    assert calls == [0]  # the initialisation only, with the row frozen
    calls.clear()
    assert run_train(corpus, tmp_path / "counted", "train.max_steps=3") == 0  # the default
    assert calls == [0, None, None, None]  # initialisation, then after each of the 3 updates
    calls.clear()
    assert run_train(corpus, tmp_path / "accumulated", "train.max_steps=2", "train.gradient_accumulation_steps=2") == 0
    assert calls == [0, None, None]  # after each update, not after each of its 4 chunks
    weights = load_file(str(tmp_path / "counted" / "best" / "model.safetensors"))
    assert weights["encoder.char_cnn.embedding.weight"][0].abs().max() == 0


# Every core and output (and the LSTM's dropout variants, which draw random numbers of their own).
PARTS = {
    "lstm-full": [],
    "lstm-full-awd": ["model.core.locked_dropout=true", "model.core.weight_drop=0.3", "model.input_dropout=0.1"],
    "rhn-full": ["model.core=rhn", "model.core.state_dropout=0.2", "model.input_dropout=0.1"],
    "lstm-char": ["model.output=char", "model.output.num_filters=[4,4,4]", "model.output.correction_dim=4"],
    "rhn-char": ["model.core=rhn", "model.output=char", "model.output.num_filters=[4,4,4]"],
    "lstm-adaptive": ["model.output=adaptive"],  # small vocabulary: tail clusters with no target in some chunks
}


@pytest.mark.parametrize("parts", PARTS)
def test_resume_mid_epoch_equals_uninterrupted(corpus, tmp_path, parts):
    full, cut = tmp_path / "full", tmp_path / "cut"
    common = ["train.max_epochs=2", "train.checkpoint_every_steps=5", *PARTS[parts]]
    assert run_train(corpus, full, *common) == 0
    # Stop mid-epoch 1, then resume (lifting the limit) to the end.
    assert run_train(corpus, cut, *common, "train.max_steps=7") == 0
    assert run_train(corpus, cut, *common, resume=True) == 0
    a, b = newest_weights(full), newest_weights(cut)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    last = lambda d: json.loads((d / "metrics.jsonl").read_text().splitlines()[-1])  # noqa: E731
    assert last(full)["valid_ppl"] == last(cut)["valid_ppl"]
    assert last(full)["train_ppl"] == last(cut)["train_ppl"]


@pytest.mark.slow
@pytest.mark.parametrize("parts", ["lstm-full", "rhn-full", "lstm-char", "rhn-char", "lstm-adaptive"])
def test_two_processes_equal_one_process_with_twice_the_batch(corpus, tmp_path, parts):
    """`accelerate launch` with 2 CPU processes (each batch 4) = 1 process with batch 8.

    On a machine without CUDA, `accelerate launch --cpu --num_processes 2` starts one process
    (its CPU launcher wants mpirun); `--multi_gpu` with ACCELERATE_USE_CPU starts two through
    torchrun in a gloo group. Dropout is off: its masks are drawn per process.
    """
    common = [
        "--config",
        str(TINY),
        "--data-dir",
        str(corpus),
        *SMALL,
        "model.dropout=0.0",
        "train.max_steps=4",
        "train.max_epochs=1",
        *PARTS[parts],
        "model.input_dropout=0.0",
        *(["model.core.state_dropout=0.0"] if parts.startswith("rhn") else []),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "PYTHONWARNINGS": "ignore"}
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--mixed_precision",
        "no",
        "--num_machines",
        "1",
        "--dynamo_backend",
        "no",
    ]
    runs = {"two": ["--multi_gpu", "--num_processes", "2"], "one": ["--num_processes", "1"]}
    batch = {"two": 4, "one": 8}
    for name, flags in runs.items():
        done = subprocess.run(
            [
                *launch,
                *flags,
                str(REPO / "scripts" / "train.py"),
                *common,
                "--output-dir",
                str(tmp_path / name),
                f"train.batch_size={batch[name]}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"{name == 'two' and 2 or 1} process(es)" in done.stdout, done.stdout
        (record,) = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        assert record["step"] == 4
    a, b = newest_weights(tmp_path / "one"), newest_weights(tmp_path / "two")
    assert a.keys() == b.keys()
    # The char output centres its word table (a difference of near-equal numbers), so the two
    # summation orders part by up to 5e-5 after four updates at lr 1.0; a gradient averaged
    # wrongly would be off by the size of an update (1e-2 and more).
    atol = 1e-4 if "char" in parts else 1e-5
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=atol, msg=name)


def test_gradient_accumulation_counts_updates(corpus, tmp_path):
    """Two chunks per update: half the updates per epoch, and every epoch ends on an update."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_train(corpus, one, "train.max_epochs=1") == 0
    assert run_train(corpus, two, "train.max_epochs=1", "train.gradient_accumulation_steps=2") == 0
    step = lambda d: json.loads((d / "metrics.jsonl").read_text().splitlines()[-1])["step"]  # noqa: E731
    assert step(two) == step(one) // 2


def test_tensorboard_tracking_holds_the_scalars_and_the_config(corpus, tmp_path, capsys):
    """train.report_to=tensorboard: the event file, read back with TensorBoard's own reader."""
    pytest.importorskip("tensorboard")  # a dev dependency: CI has it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert run_train(corpus, out, "train.max_epochs=2", "train.log_every=2", "train.report_to=tensorboard") == 0
    readers = [EventAccumulator(str(path.parent)).Reload() for path in (out / "charlm").rglob("events.out.tfevents.*")]
    (reader,) = [r for r in readers if r.Tags()["scalars"]]  # the scalars' file (hparams have their own)
    tags = set(reader.Tags()["scalars"])
    assert {"train/loss", "train/ppl", "train/lr", "train/tokens_per_sec", "train/grad_norm", "valid/ppl"} <= tags
    valid = [e.value for e in reader.Scalars("valid/ppl")]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert valid == pytest.approx([r["valid_ppl"] for r in records], rel=1e-3)  # the same numbers as the record
    losses = reader.Scalars("train/loss")
    assert len(losses) >= 2 and all(math.isfinite(e.value) for e in losses)
    assert reader.Scalars("train/lr")[0].value == 1.0
    code = main(
        [
            "train",
            "--config",
            str(TINY),
            "--data-dir",
            str(corpus),
            "--output-dir",
            str(tmp_path / "x"),
            *SMALL,
            "train.report_to=nosuchtracker",
        ]
    )
    assert code == 2 and "not a tracker accelerate knows" in capsys.readouterr().err


def test_weight_average_is_the_running_mean_and_is_applied_only_within_its_block():
    from charlm.averaging import WeightAverage

    layer = torch.nn.Linear(3, 2)
    before = layer.weight.detach().clone()
    average = WeightAverage(layer)
    with average.applied():  # nothing added yet: the model keeps its weights
        assert torch.equal(layer.weight, before)
    seen = []
    for value in (1.0, 2.0, 6.0):
        with torch.no_grad():
            layer.weight.fill_(value)
            layer.bias.normal_()
        seen.append(layer.bias.detach().clone())
        average.add()
    own_bias = layer.bias.detach().clone()
    with average.applied():
        torch.testing.assert_close(layer.weight, torch.full((2, 3), 3.0))
        torch.testing.assert_close(layer.bias, torch.stack(seen).mean(0))
    assert bool((layer.weight == 6.0).all()) and torch.equal(layer.bias, own_bias)  # put back bit for bit


ASGD = ["train.average=asgd", "train.decay_start_epoch=2", "train.decay_threshold=1000", "train.max_epochs=4"]


def records_of(output_dir):
    return [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]


def test_asgd_starts_where_the_lr_would_decay_keeps_the_lr_and_validates_and_exports_the_average(
    corpus, tmp_path, capsys
):
    """decay_threshold=1000: every epoch from the second counts as stalled, so the paper's rule
    halves the lr from epoch 3 on, and asgd averages from the end of epoch 2 at the same lr."""
    assert run_train(corpus, tmp_path / "decay", *ASGD, "train.average=none") == 0
    assert [r["lr"] for r in records_of(tmp_path / "decay")] == [1.0, 1.0, 0.5, 0.25]
    out = tmp_path / "asgd"
    assert run_train(corpus, out, *ASGD) == 0
    records = records_of(out)
    per_epoch = records[0]["step"]
    assert [r["lr"] for r in records] == [1.0] * 4
    assert [r.get("averaged_updates") for r in records] == [None, None, per_epoch, 2 * per_epoch]
    assert "(weights averaged over" in capsys.readouterr().out
    # The exported model is the average that was validated: scored again it gives the recorded
    # perplexity, and its weights are the mean saved in the run's state, not the run's own weights.
    (best,) = [r for r in records if r["epoch"] == json.loads((out / "best" / "config.json").read_text())["epoch"]]
    assert best.get("averaged_updates"), records  # averaging helps the tiny grammar too
    capsys.readouterr()
    assert (
        main(["perplexity", "--checkpoint", str(out / "best"), "--data-dir", str(corpus), "--split", "valid", "--json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["perplexity"] == pytest.approx(best["valid_ppl"], abs=1e-3)
    state = out / "checkpoints" / f"step-{best['step']:09d}"  # saved at the end of the best epoch
    average, exported, own = (
        load_file(str(state / "average.safetensors")),
        load_file(str(out / "best" / "model.safetensors")),
        load_file(str(state / "model.safetensors")),
    )
    for name in average:
        assert torch.equal(average[name], exported[name]), name
    assert any(not torch.equal(average[name], own[name]) for name in average)


def test_resume_while_averaging_equals_uninterrupted(corpus, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    common = [*ASGD, "train.checkpoint_every_steps=5"]
    assert run_train(corpus, full, *common) == 0
    per_epoch = records_of(full)[0]["step"]
    assert run_train(corpus, cut, *common, f"train.max_steps={2 * per_epoch + 7}") == 0  # stop inside epoch 3
    assert run_train(corpus, cut, *common, resume=True) == 0
    assert records_of(full)[-1] == {
        **records_of(cut)[-1],
        "seconds": records_of(full)[-1]["seconds"],
        "tokens_per_sec": records_of(full)[-1]["tokens_per_sec"],
    }
    for files in (
        newest_weights,
        lambda d: load_file(str(d / "best" / "model.safetensors")),
        lambda d: load_file(str(complete_checkpoints(d)[-1] / "average.safetensors")),
    ):
        a, b = files(full), files(cut)
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), name
