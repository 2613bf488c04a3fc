"""The ``charlm`` console script: one subcommand per user task.

Each subcommand lives in its own module, which provides two plain functions:

* ``add_arguments(parser)``: declares the options (every option has a help text);
* ``run(args) -> int``: does the work and returns the exit status.

``main`` maps the subcommand to its module, turns :class:`CharlmError` (a user mistake) into a
one-line ``error: ...`` message with exit status 2, and leaves real bugs their tracebacks.
The files in ``scripts/`` call :func:`main` with their subcommand name, nothing more.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from charlm.errors import CharlmError
from charlm.memory import keep_freed_memory

# subcommand -> (module, one-line description). Modules are imported lazily so that
# ``charlm prepare --help`` does not pay for importing torch's training stack.
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("data_prep.prepare", "prepare a corpus: vocabulary, spellings and word-id arrays"),
    "train": ("charlm.train", "train a model (run under `accelerate launch` for several processes)"),
    "perplexity": ("charlm.evaluate", "exact full-stream perplexity on a prepared split or a text file"),
    "generate": ("charlm.generate", "sample text from a trained model"),
    "neighbors": ("charlm.analysis", "nearest vocabulary words by the character-aware word representation"),
    "gates": ("charlm.analysis", "highway transform-gate activity over a text"),
    "embed": ("charlm.embed", "word vectors of any words (unseen ones from their spelling), as word2vec text or .npy"),
    "push": ("charlm.hub", "upload an exported model to the Hugging Face hub"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="charlm",
        description="Character-aware neural language models (Kim et al. 2016).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, description) in COMMANDS.items():
        if only is not None and name != only:
            continue
        module = importlib.import_module(module_name)
        command_parser = sub.add_parser(
            name,
            help=description,
            description=description,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        add = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
        add(command_parser)
        command_parser.set_defaults(_run=getattr(module, f"run_{name}", None) or module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the module of the command asked for (all of them for plain `charlm --help`).
    only = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only)
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options (`train --data-dir D train.lr=0.5`), which a
    # positional argument after options does not allow in argparse: collect them here.
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    keep_freed_memory()  # reuse freed tensors' memory instead of faulting in fresh pages (memory.py)
    try:
        return int(args._run(args) or 0)
    except CharlmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
