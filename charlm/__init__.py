"""charlm: character-aware neural language models (Kim, Jernite, Sontag & Rush, 2016).

    model, vocab = charlm.from_pretrained("runs/demo/best")   # a directory or a hub id (owner/name)
    charlm.save_pretrained(model, vocab, "exported/")

Both are :mod:`charlm.hub`'s, imported on first use so that ``import charlm`` stays light.
"""

__version__ = "0.2.0"

_HUB_FUNCTIONS = ("from_pretrained", "save_pretrained")


def __getattr__(name: str):
    if name in _HUB_FUNCTIONS:
        from charlm import hub

        return getattr(hub, name)
    raise AttributeError(f"module 'charlm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_HUB_FUNCTIONS])
