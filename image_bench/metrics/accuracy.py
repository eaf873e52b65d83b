"""Word accuracy and normalised edit distance, in the STISR literature's convention.

Both sides (prediction and label) pass through :func:`image_bench.charset.normalize`: lower-case,
drop every character outside [0-9a-z] (TextZoom's ``str_filt(s, 'lower')``; RECOGNIZERS.md §1d).

NED follows the ICDAR-2019 definition: Levenshtein(p, g) / max(|p|, |g|), with two empty strings
at distance 0 (as rapidfuzz, used by mmocr/OpenOCR, does). The suite reports 1 - mean NED.
"""

from __future__ import annotations

from collections.abc import Sequence

import editdistance

from image_bench.charset import normalize


def _check(predictions: Sequence[str], labels: Sequence[str]) -> None:
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")


def word_correct(predictions: Sequence[str], labels: Sequence[str]) -> list[bool]:
    """Per word: does the normalised prediction equal the normalised label exactly?"""
    _check(predictions, labels)
    return [normalize(p) == normalize(g) for p, g in zip(predictions, labels)]


def word_accuracy(predictions: Sequence[str], labels: Sequence[str]) -> float:
    """Fraction of exact matches after normalisation (0 for an empty list would hide a bug)."""
    if not labels:
        raise ValueError("word accuracy of an empty set is undefined")
    flags = word_correct(predictions, labels)
    return sum(flags) / len(flags)


def normalized_edit_distance(prediction: str, label: str) -> float:
    """ICDAR-2019 NED of one pair after normalisation: Levenshtein / max length, in [0, 1]."""
    p, g = normalize(prediction), normalize(label)
    longest = max(len(p), len(g))
    if longest == 0:
        return 0.0
    return editdistance.eval(p, g) / longest


def one_minus_ned(predictions: Sequence[str], labels: Sequence[str]) -> float:
    """1 - mean NED over the pairs (PARSeq's val_NED as a fraction; ICDAR-2019 normalisation)."""
    _check(predictions, labels)
    if not labels:
        raise ValueError("NED of an empty set is undefined")
    total = sum(normalized_edit_distance(p, g) for p, g in zip(predictions, labels))
    return 1.0 - total / len(labels)


__all__ = ["word_correct", "word_accuracy", "normalized_edit_distance", "one_minus_ned"]
