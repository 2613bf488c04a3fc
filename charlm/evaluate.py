"""``charlm perplexity``: the exact full-stream perplexity of a trained model.

    charlm perplexity --checkpoint runs/ptb-char-small/best --data-dir data/ptb --split test
    charlm perplexity --checkpoint runs/ptb-char-small/best --text-file notes.txt --json

The number is :func:`charlm.scoring.score_stream`'s: ``exp(total NLL / total predicted tokens)``
over the whole stream, the LSTM state carried from the first token to the last, the stream read as
if it followed an end-of-sentence. A text file is tokenized with the model's own vocabulary and
tokenizer; words the model does not know become ``<unk>``, are scored as ``<unk>`` and counted.

Under ``accelerate launch`` with several processes the main process computes the number and prints
it; the others wait (:func:`main_process_only`, used by every "use a model" command). Carrying the
state over the whole stream is what makes the number exact, so the stream cannot be split between
processes without changing it.

``--columns N`` is the one exception, an approximation that must be asked for: the stream is cut
into N consecutive pieces scored side by side as a batch, each piece after the first warmed up on
the ``--warmup`` tokens before it (:func:`charlm.scoring.score_columns`). The output says so.

This module also holds the input helpers the other "use a model" commands share: the device, the
model directory, and reading a text file or a prepared split.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charlm.checkpoint import training_record
from charlm.errors import CharlmError
from charlm.hub import resolve_model_dir
from charlm.inputs import (
    DEFAULTS,
    add_model_arguments,
    add_source_arguments,
    input_ids,
    load_checkpoint,
    main_process_only,
    process_state,
    read_text_lines,
)
from charlm.io import atomic_open
from charlm.model import CharLM
from charlm.plots import check_output_path
from charlm.runtime import device_name
from charlm.scoring import score_columns, score_stream
from charlm.text import Vocabulary

# ----------------------------------------------------------------------------- perplexity


def perplexity(
    model: CharLM,
    vocab: Vocabulary,
    ids: np.ndarray,
    chunk_len: int = DEFAULTS.chunk_len,
    per_token: bool = False,
    progress: bool = False,
    bf16: bool = False,
    columns: int = DEFAULTS.columns,
    warmup: int = DEFAULTS.warmup,
) -> dict[str, Any]:
    """Exact full-stream perplexity of ``ids`` (word ids), with its parts; with ``columns > 1`` the
    approximation of :func:`charlm.scoring.score_columns` instead.

    Returns ``{"perplexity", "nll", "tokens", "unk", "seconds", "exact"}`` (``nll`` summed, in nats;
    ``unk`` the number of scored tokens that are ``<unk>``; ``exact`` false for the approximation,
    which also adds ``"columns"`` and ``"warmup"``), plus ``"logprobs"`` (a float array, one
    natural-log probability per token) when ``per_token``.
    """
    if chunk_len < 1:
        raise CharlmError(f"chunk length must be at least 1, got {chunk_len}")
    if columns < 1 or warmup < 0:
        raise CharlmError(f"--columns must be at least 1 and --warmup at least 0, got {columns} and {warmup}")
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1 or ids.size == 0:
        raise CharlmError("nothing to score: the token stream is empty")
    start = time.perf_counter()
    if columns == 1:
        score = score_stream(
            model, ids, vocab.eos_id, chunk_len=chunk_len, per_token=per_token, progress=progress, bf16=bf16
        )
    else:
        score = score_columns(
            model,
            ids,
            vocab.eos_id,
            columns,
            warmup,
            chunk_len=chunk_len,
            per_token=per_token,
            progress=progress,
            bf16=bf16,
        )
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {
        "perplexity": score.perplexity,
        "nll": score.nll,
        "tokens": score.tokens,
        "unk": int(np.count_nonzero(ids == vocab.unk_id)) if vocab.unk_id is not None else 0,
        "seconds": round(seconds, 3),
        "exact": columns == 1,
    }
    if columns > 1:
        result.update(columns=columns, warmup=warmup)
    if per_token:
        result["logprobs"] = score.logprobs
    return result


def oov_by_spelling(
    model: CharLM, vocab: Vocabulary, lines: list[str], ids: np.ndarray, chunk_len: int = DEFAULTS.chunk_len
) -> dict[str, Any]:
    """The text's out-of-vocabulary tokens scored by their spelling (``model.output: char``).

    The standard number scores such a token as ``<unk>``. A spelling-based output layer can give
    the word itself a probability: its logit from its spelling, normalised over the vocabulary
    with ``<unk>`` replaced by that word. Returned separately, never mixed into the perplexity:
    ``{"oov_tokens", "oov_nll_as_unk", "oov_nll_by_spelling", "oov_ppl_as_unk", "oov_ppl_by_spelling"}``
    (summed NLLs in nats; perplexities over the out-of-vocabulary tokens only).
    """
    from charlm.nn import CharSoftmax
    from charlm.scoring import core_outputs, safe_exp

    if not isinstance(model.output, CharSoftmax):
        raise CharlmError(
            f"--oov-by-spelling needs a model with a spelling-based output layer (model.output: char); "
            f"this one has model.output: {model.config.output.name}"
        )
    eos = [vocab.words[vocab.eos_id]] if vocab.add_eos else []
    tokens = [token for line in lines for token in (*vocab.tokenize(line), *eos)]
    if len(tokens) != len(ids):  # pragma: no cover - the tokenizer's two views of a text disagree
        raise CharlmError(
            "the tokenizer split the text differently when asked for words and for ids; "
            "--oov-by-spelling cannot line them up"
        )
    unknown = [
        p
        for p, (token, i) in enumerate(zip(tokens, ids.tolist()))
        if i == vocab.unk_id and not in_vocabulary_name(vocab, token)
    ]
    result: dict[str, Any] = {"oov_tokens": len(unknown)}
    if not unknown:
        return result
    positions = torch.tensor(unknown)
    hidden = core_outputs(model, ids, vocab.eos_id, positions, chunk_len)  # [n, H]
    chars = torch.tensor([vocab.spell(tokens[p]) for p in unknown], device=hidden.device)
    with torch.inference_mode(), model.output.frozen():
        as_unk = -model.output.log_probs(hidden)[:, vocab.unk_id].double().sum().item()
        spelled = -model.output.spelling_log_probs(hidden, chars, vocab.unk_id).double().sum().item()
    return {
        **result,
        "oov_nll_as_unk": as_unk,
        "oov_nll_by_spelling": spelled,
        "oov_ppl_as_unk": safe_exp(as_unk / len(unknown)),
        "oov_ppl_by_spelling": safe_exp(spelled / len(unknown)),
    }


def in_vocabulary_name(vocab: Vocabulary, token: str) -> bool:
    """Whether ``token`` is a vocabulary word (``<unk>`` written in the text counts as one)."""
    return vocab.word_id(token) != vocab.unk_id or vocab.normalize(token) == vocab.words[vocab.unk_id]


def write_per_token(path: str | Path, vocab: Vocabulary, ids: np.ndarray, logprobs: np.ndarray) -> None:
    """Each token with its log-probability: TSV (header ``token\\tlogprob``) or JSONL (``*.jsonl``).

    Written under a temporary name and renamed into place.
    """
    path = Path(path)
    words = vocab.words
    with atomic_open(path) as f:
        if path.suffix == ".jsonl":
            for i, lp in zip(ids.tolist(), logprobs.tolist()):
                f.write(json.dumps({"token": words[i], "logprob": lp}, ensure_ascii=False) + "\n")
        else:
            f.write("token\tlogprob\n")
            f.writelines(f"{words[i]}\t{lp:.6f}\n" for i, lp in zip(ids.tolist(), logprobs.tolist()))


def format_result(result: dict[str, Any]) -> str:
    unk_share = result["unk"] / max(result["tokens"], 1)
    approximate = (
        ""
        if result["exact"]
        else (f" (approximate: {result['columns']} columns, {result['warmup']} warm-up tokens each)")
    )
    return (
        f"perplexity {result['perplexity']:.3f}{approximate} | "
        f"nll {result['nll'] / max(result['tokens'], 1):.4f} nats/token | "
        f"{result['tokens']:,} tokens ({result['unk']:,} <unk>, {unk_share:.1%}) | {result['seconds']:.2f} s"
    )


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_source_arguments(parser)
    parser.add_argument(
        "--chunk-len",
        type=int,
        default=DEFAULTS.chunk_len,
        help="tokens per LSTM call (speed and memory only; the number is exact either way)",
    )
    parser.add_argument(
        "--per-token",
        metavar="F",
        help="also write each token with its log-probability (natural log) to F: TSV, or JSONL if F ends in .jsonl",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (perplexity, nll, tokens, unk, seconds, ...) instead of a line",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="matrix products in bfloat16 (softmax in float32): faster on CPUs with bf16 "
        "support and on GPUs, not bit-exact (docs/speed.md gives the difference)",
    )
    parser.add_argument(
        "--columns",
        type=int,
        default=DEFAULTS.columns,
        metavar="N",
        help="1: the exact full-stream number. N > 1: an approximation that scores N pieces "
        "of the stream side by side, each warmed up on the --warmup tokens before it (faster "
        "where the batch-1 recurrence is the bottleneck, e.g. GPUs; not on a 2-core CPU)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=DEFAULTS.warmup,
        metavar="W",
        help="with --columns > 1: unscored tokens each piece reads first (capped at the piece length)",
    )
    parser.add_argument(
        "--oov-by-spelling",
        action="store_true",
        help="with --text-file and a model whose output layer reads spellings (model.output: char): "
        "also score the text's out-of-vocabulary words by their spelling instead of as <unk>, "
        "reported separately (the perplexity itself is unchanged)",
    )


@main_process_only  # the number needs the whole stream in one process; see the module docstring
def run(args: argparse.Namespace) -> int:
    if args.chunk_len < 1:
        raise CharlmError(f"--chunk-len must be at least 1, got {args.chunk_len}")
    if args.columns < 1 or args.warmup < 0:
        raise CharlmError(f"--columns must be at least 1 and --warmup at least 0, got {args.columns} and {args.warmup}")
    if args.per_token:
        check_output_path(args.per_token)
    if args.oov_by_spelling and args.text_file is None:
        raise CharlmError("--oov-by-spelling needs --text-file: a prepared split holds <unk> ids, not the words")
    model, vocab = load_checkpoint(args.checkpoint, args.device)
    ids = input_ids(vocab, args)
    spelled = (
        oov_by_spelling(model, vocab, read_text_lines(args.text_file), ids, args.chunk_len)
        if args.oov_by_spelling
        else {}
    )
    result = perplexity(
        model,
        vocab,
        ids,
        args.chunk_len,
        per_token=bool(args.per_token),
        progress=sys.stderr.isatty(),
        bf16=args.bf16,
        columns=args.columns,
        warmup=args.warmup,
    )
    logprobs = result.pop("logprobs", None)
    if args.per_token:
        write_per_token(args.per_token, vocab, ids, logprobs)
    source = (
        {"text_file": str(args.text_file)} if args.text_file else {"data_dir": str(args.data_dir), "split": args.split}
    )
    if args.json:
        trained = {**training_record(resolve_model_dir(args.checkpoint)), "parameters": model.num_parameters()}
        print(
            json.dumps(
                {
                    **result,
                    **spelled,
                    "checkpoint": str(args.checkpoint),
                    **source,
                    "processes": process_state().num_processes,
                    "scored_on": device_name(model.device.type),
                    "model": trained,
                }
            )
        )
    else:
        print(format_result(result))
        if spelled.get("oov_tokens"):
            print(
                f"out-of-vocabulary tokens ({spelled['oov_tokens']:,}), scored separately: as <unk> perplexity "
                f"{spelled['oov_ppl_as_unk']:.3f}, by spelling {spelled['oov_ppl_by_spelling']:.3f}"
            )
        elif args.oov_by_spelling:
            print("out-of-vocabulary tokens: none")
    return 0
