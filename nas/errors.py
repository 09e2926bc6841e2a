"""The one exception type the CLI turns into a single line and a non-zero exit, and the one way to quote another."""

import re


class NasError(Exception):
    """A problem the user can fix; the message names it and the fix."""


def first_line(error: BaseException) -> str:
    """The first line of the innermost cause of `error`, without terminal colour codes: what a NasError quotes of
    a library's exception (ONNX's exporter, for one, wraps the real problem in a multi-line coloured preamble)."""
    seen = {id(error)}
    while error.__cause__ is not None and id(error.__cause__) not in seen:
        error = error.__cause__
        seen.add(id(error))
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def error_line(error: BaseException) -> str:
    """The one line the command line prints for `error`: a NasError's message; for what the file system refuses
    (a name too long, a symlink loop) or an input nested past Python's recursion limit, what and where."""
    if isinstance(error, NasError):
        return str(error)
    if isinstance(error, RecursionError):
        return "an input (YAML or JSON) nested too deeply, or referring to itself; check the file"
    where = getattr(error, "filename", None)
    return f"{where}: {error.strerror or first_line(error)}" if where else first_line(error)
