"""The one exception type for problems a user can fix (bad files, flags, ids).

Raised deep in the library; the CLI boundary turns it into a single line on stderr and exit code 2.
Programming errors stay ordinary exceptions with tracebacks.
"""

from __future__ import annotations

import os


class AamError(Exception):
    """A user-facing error: what went wrong, where (file, row or flag) and what to do about it.

    Args:
        message: what is wrong, e.g. ``"3 sample ids are missing from the distance matrix"``.
        source: the file, flag or row concerned, e.g. ``"metadata.tsv"`` or ``"--batch-size"``.
        hint: what the user can do, e.g. ``"pass --rarefy-depth 1000 or lower"``.
    """

    def __init__(self, message: str, *, source: str | os.PathLike | None = None, hint: str | None = None):
        self.message = message
        self.source = None if source is None else str(source)
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = f"{self.source}: {self.message}" if self.source else self.message
        if self.hint:
            text = f"{text.rstrip('.')}; {self.hint}"
        return " ".join(text.split())
