"""Usage errors: exit status 2 and one line that names the bad value, no traceback.

click's own usage errors print the usage line and a hint before the message; a user who typed a
wrong model name or ``--set`` key needs only the line that says what was wrong and what is
accepted. Commands raise :class:`UsageError` before they create anything (no run folder is left
behind).
"""

from __future__ import annotations

import click


class UsageError(click.UsageError):
    """A bad command-line value: ``image-bench: error: <message>`` on stderr, exit 2."""

    def show(self, file=None) -> None:
        click.echo(f"image-bench: error: {self.format_message()}", err=True)
