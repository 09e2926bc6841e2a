"""The one exception type the CLI turns into a single line and a non-zero exit."""


class NasError(Exception):
    """A problem the user can fix; the message names it and the fix."""
