"""The one exception type that means "the user asked for something that cannot be done".

The CLI turns it into a single line on stderr and exit code 2. Anything else that
escapes is a bug in genexp and is allowed to traceback.
"""


class UserError(Exception):
    """A mistake in the command line, a config, a file or a path: fixable by the user."""


class Stopped(Exception):
    """Training ended on purpose before max_steps (a signal, a non-finite loss). The message says
    why and how to go on; ``code`` is the process exit status (128 + signal number for signals)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def first_line(exc: BaseException) -> str:
    """An unexpected exception as one line for run.json and sweep summaries: its type and first line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


def cause_of(exc: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """The ``kind`` exception behind ``exc`` (itself, or along its causes and contexts): Hydra wraps
    what a constructor or a composition raised."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
