"""The experiment scripts under scripts/experiments/ compute what their docstrings say."""

import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from helpers_model import trained  # noqa: F401 (a fixture)
from torch import nn

TINY_CHAR_OUTPUT = [
    "model.output=char",
    "model.output.num_filters=[4,4,4]",
    "model.kernel_widths=[1,2,3]",
    "model.num_filters=[8,8,8]",
    "model.hidden_size=16",
    "train.batch_size=4",
    "train.seq_len=8",
]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "experiments" / "reference_stale_state.py"


def load_script():
    spec = importlib.util.spec_from_file_location("reference_stale_state", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stale_by_hand(lstm: nn.LSTM, x, h0, c0, h_final, c_final):
    """The reference's step-1 gradients written another way: the value uses the carried state,
    the weight and forget-gate gradients see the final state (known beforehand here)."""
    hs, cs, outputs = list(h0), list(c0), []
    for t in range(x.shape[1]):
        step_input = x[:, t]
        for layer in range(lstm.num_layers):
            w_hh = getattr(lstm, f"weight_hh_l{layer}")
            if t == 0:  # value W h0, gradient for W from h_final
                recurrent = F.linear(h_final[layer], w_hh) + F.linear(hs[layer] - h_final[layer], w_hh.detach())
            else:
                recurrent = F.linear(hs[layer], w_hh)
            gates = (
                F.linear(step_input, getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"bias_ih_l{layer}"))
                + getattr(lstm, f"bias_hh_l{layer}")
                + recurrent
            )
            i, f, g, o = gates.chunk(4, dim=-1)
            f = torch.sigmoid(f)
            if t == 0:  # value f * c0, gradient for f from c_final
                carried = f * c_final[layer] + f.detach() * (cs[layer] - c_final[layer])
            else:
                carried = f * cs[layer]
            cs[layer] = carried + torch.sigmoid(i) * torch.tanh(g)
            hs[layer] = torch.sigmoid(o) * torch.tanh(cs[layer])
            step_input = hs[layer]
        outputs.append(step_input)
    return torch.stack(outputs, dim=1)


def test_stale_state_forward_matches_values_and_the_reference_gradients():
    script = load_script()
    torch.manual_seed(0)
    lstm = nn.LSTM(5, 7, num_layers=2, batch_first=True).double()
    x = torch.randn(3, 6, 5, dtype=torch.double, requires_grad=True)
    h0, c0 = torch.randn(2, 3, 7, dtype=torch.double), torch.randn(2, 3, 7, dtype=torch.double)
    weight = torch.randn(3, 6, 7, dtype=torch.double)  # a loss that weighs every output

    with torch.no_grad():
        plain_out, (h_n, c_n) = lstm(x, (h0, c0))
    out, (h_last, c_last) = script.stale_state_forward(lstm, x, (h0, c0))
    torch.testing.assert_close(out, plain_out)  # forward values are untouched
    torch.testing.assert_close(h_last, h_n)
    torch.testing.assert_close(c_last, c_n)
    grads = torch.autograd.grad((out * weight).sum(), [x, *lstm.parameters()])

    expected_out = stale_by_hand(lstm, x, h0, c0, h_n, c_n)
    torch.testing.assert_close(expected_out, plain_out)
    expected = torch.autograd.grad((expected_out * weight).sum(), [x, *lstm.parameters()])
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)

    plain = torch.autograd.grad((lstm(x, (h0, c0))[0] * weight).sum(), [x, *lstm.parameters()])
    assert not torch.allclose(grads[2], plain[2])  # weight_hh_l0: the quirk does change it


def test_stale_state_forward_is_the_plain_one_in_eval():
    script = load_script()
    lstm = nn.LSTM(4, 4, num_layers=2, batch_first=True).eval()
    x, hidden = torch.randn(2, 3, 4), (torch.randn(2, 2, 4), torch.randn(2, 2, 4))
    with torch.no_grad():
        torch.testing.assert_close(script.stale_state_forward(lstm, x, hidden)[0], lstm(x, hidden)[0])


def test_gradient_gap_reports_finite_gaps(trained):
    gap_script = SCRIPT.with_name("stale_state_gradient_gap.py")
    result = subprocess.run(
        [
            sys.executable,
            str(gap_script),
            "--checkpoint",
            str(trained.model_dir),
            "--data-dir",
            str(trained.data_dir),
            "--skip",
            "2",
            "--chunks",
            "3",
            "--batch-size",
            "4",
            "--seq-len",
            "10",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    numbers = [float(n) for n in re.findall(r"\d+\.\d+", result.stdout)]
    assert len(numbers) == 4 and all(math.isfinite(n) for n in numbers)
    assert numbers[0] > 0 and numbers[3] > 0  # a carried state moves step 1's gradient; chunks differ


def test_gradient_gap_bad_input_is_one_line(trained, tmp_path):
    gap_script = SCRIPT.with_name("stale_state_gradient_gap.py")
    for argv in (
        ["--checkpoint", str(tmp_path / "missing"), "--data-dir", str(trained.data_dir)],
        ["--checkpoint", str(trained.model_dir), "--data-dir", str(trained.data_dir)],
    ):  # too short
        result = subprocess.run([sys.executable, str(gap_script), *argv], capture_output=True, text=True)
        assert result.returncode == 2
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr


def test_padding_gradient_script_reports_the_row_and_the_shrink(trained, tmp_path):
    script = SCRIPT.with_name("padding_gradient.py")
    common = ["--data-dir", str(trained.data_dir), "--chunks", "3", "--batch-size", "4", "--seq-len", "10"]
    result = subprocess.run(
        [sys.executable, str(script), "--checkpoint", str(trained.model_dir), *common],
        capture_output=True,
        text=True,
        check=True,
    )
    pad, pad_max, others, clip, _, _, _, _, shrink = (float(n) for n in re.findall(r"\d+(?:\.\d+)?", result.stdout))
    assert 0 < pad <= pad_max and others > 0 and clip == 5
    assert 0 < shrink <= 1  # counting one more gradient in the norm can only shrink a clipped step
    missing = subprocess.run(
        [sys.executable, str(script), "--checkpoint", str(tmp_path / "missing"), *common],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and missing.stderr.count("\n") == 1


def test_output_training_probe_prints_one_line_per_window(trained):
    script = SCRIPT.with_name("output_training_probe.py")
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "--data-dir",
            str(trained.data_dir),
            "--config",
            "tiny",
            "--updates",
            "4",
            "--every",
            "2",
            *TINY_CHAR_OUTPUT,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["update 2", "update 4"]
    assert all("|e|" in line and "eval" in line for line in lines)


def test_adaptive_speed_script_times_the_three_layers():
    script = SCRIPT.with_name("adaptive_speed.py")
    result = subprocess.run(
        [sys.executable, str(script), "--vocab", "300", "--repeats", "1"], capture_output=True, text=True, check=True
    )
    rows = [line.split() for line in result.stdout.splitlines() if line.strip().startswith("300")]
    assert [row[1] for row in rows] == ["fp32", "bf16"]
    assert rows[1][3] == "fails" or float(rows[1][3]) > 0  # torch 2.13's layer fails under bf16 autocast
    assert all(float(row[2]) > 0 and float(row[4]) > 0 for row in rows)


def test_compare_runs_tables_each_run_and_draws_the_plot(tmp_path):
    script = SCRIPT.with_name("compare_runs.py")
    for name, valid in (("a", [300.0, 200.0, 150.0]), ("b", [250.0, 180.0])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text(
            "".join(f'{{"epoch": {e + 1}, "valid_ppl": {v}}}\n' for e, v in enumerate(valid))
        )
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            f"A={tmp_path / 'a'}",
            f"B={tmp_path / 'b' / 'metrics.jsonl'}",
            "--epochs",
            "1",
            "3",
            "--plot",
            str(tmp_path / "p.png"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [line for line in result.stdout.splitlines() if line.startswith("| A") or line.startswith("| B")]
    assert rows == ["| A | 300.0 | 150.0 | 150.00 | 3 |", "| B | 250.0 | - | 180.00 | 2 |"]
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_char_output_offset_script_shows_float32_ignores_a_common_offset(trained):
    script = SCRIPT.with_name("char_output_offset.py")
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "--data-dir",
            str(trained.data_dir),
            "--config",
            "tiny",
            "--updates",
            "4",
            "--every",
            "2",
            *TINY_CHAR_OUTPUT,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["update 2", "update 4"]
    float32 = [float(re.search(r"float32 ([\d.]+)", line).group(1)) for line in lines[2:]]
    assert len(float32) == 4 and max(float32) - min(float32) < 0.05 * min(float32)  # the offset changes no probability


def test_plain_word_lstm_learns_and_writes_charlm_records(trained, tmp_path):
    """The own-corpus peer: per-epoch records in charlm's format, better than uniform, a test score."""
    import json

    script = SCRIPT.with_name("plain_word_lstm.py")
    out = tmp_path / "plain"
    argv = ["--data-dir", str(trained.data_dir), "--output-dir", str(out), "--epochs", "2", "--size", "16"]
    subprocess.run([sys.executable, str(script), *argv, "--batch-size", "4", "--seq-len", "8"], check=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"lr", "train_ppl", "valid_ppl", "tokens_per_sec", "seconds"} <= set(records[0])
    from charlm.corpus import load_corpus

    vocab_size = len(load_corpus(trained.data_dir)[0])
    test = json.loads((out / "test.json").read_text())
    assert test["split"] == "test" and 1.0 < test["perplexity"] < vocab_size  # it learned something
    assert records[1]["train_ppl"] < vocab_size and math.isfinite(records[1]["valid_ppl"])
