"""The suite's one progress bar (rich): description, bar, done/total, any extra fields, elapsed
time and ETA. Data generation and training use it."""

from __future__ import annotations


def progress_bar(*fields: str, disable: bool = False):
    """A rich ``Progress`` with a text column for each format string in ``fields`` (e.g.
    ``"loss {task.fields[loss]}"``) between the count and the times."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    *(TextColumn(f) for f in fields), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), disable=disable)
