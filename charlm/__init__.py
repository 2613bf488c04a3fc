"""charlm: character-aware neural language models (Kim, Jernite, Sontag & Rush, 2016)."""

__version__ = "0.1.0"
