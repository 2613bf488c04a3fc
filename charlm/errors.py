"""User-facing errors.

Anything a user can cause (a wrong path, a bad option, a file that is not UTF-8) is raised as
:class:`CharlmError` with a one-line message that names the problem and the fix. The command-line
entry point prints it as ``error: <message>`` and exits with status 2, without a traceback.
Programming errors stay ordinary exceptions so they keep their tracebacks.
"""


class CharlmError(Exception):
    """A mistake in the user's input: printed as one line, exit status 2."""


def error_reason(err: BaseException) -> str:
    """The first line of an exception's message (``strerror`` for an OSError), for one-line errors."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
