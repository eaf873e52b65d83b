"""The 36-symbol alphabet of the STISR literature, label normalisation and CTC coding.

Index 0 is the CTC blank; '0'..'9' are 1..10 and 'a'..'z' are 11..36, as in the TextZoom/TPGSR
evaluator CRNN (alphabet ``-0123456789abcdefghijklmnopqrstuvwxyz``).
"""

from __future__ import annotations

import string

import torch

ALPHABET = string.digits + string.ascii_lowercase
BLANK = 0
NUM_CLASSES = len(ALPHABET) + 1  # 37: the alphabet plus the blank
_INDEX = {ch: i + 1 for i, ch in enumerate(ALPHABET)}
_ALLOWED = frozenset(ALPHABET)


def normalize(text: str) -> str:
    """Lower-case and drop every character outside [0-9a-z].

    The one normalisation used for labels and predictions alike (TextZoom's ``str_filt(s,
    'lower')``): accents, punctuation and spaces vanish, so 'Café-2!' becomes 'caf2'.
    """
    return "".join(ch for ch in text.lower() if ch in _ALLOWED)


def encode(texts: list[str], max_length: int = 25) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise and encode labels as CTC targets.

    Returns ``targets`` (B, max_length) of class indices padded with the blank and ``lengths``
    (B,). Labels longer than ``max_length`` after normalisation are cut; a label that is empty
    after normalisation raises ValueError, since CTC cannot learn from it.
    """
    targets = torch.zeros(len(texts), max_length, dtype=torch.long)
    lengths = torch.zeros(len(texts), dtype=torch.long)
    for row, text in enumerate(texts):
        clean = normalize(text)[:max_length]
        if not clean:
            raise ValueError(f"label {text!r} is empty after normalisation to [0-9a-z]")
        targets[row, : len(clean)] = torch.tensor([_INDEX[ch] for ch in clean])
        lengths[row] = len(clean)
    return targets, lengths


def decode_indices(indices: list[int]) -> str:
    """Greedy CTC collapse of one frame sequence: merge repeats, then drop blanks."""
    out = []
    previous = BLANK
    for index in indices:
        if index != previous and index != BLANK:
            out.append(ALPHABET[index - 1])
        previous = index
    return "".join(out)


def greedy_decode(logits: torch.Tensor) -> list[str]:
    """Greedy CTC decoding of logits shaped (B, T, NUM_CLASSES)."""
    if logits.dim() != 3 or logits.shape[-1] != NUM_CLASSES:
        raise ValueError(f"expected logits (B, T, {NUM_CLASSES}), got {tuple(logits.shape)}")
    best = logits.argmax(dim=-1).tolist()
    return [decode_indices(row) for row in best]
