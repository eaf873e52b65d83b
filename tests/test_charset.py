import pytest
import torch

from image_bench import charset


def test_alphabet_and_blank():
    assert charset.NUM_CLASSES == 37
    assert charset.ALPHABET[0] == "0" and charset.ALPHABET[-1] == "z"


@pytest.mark.parametrize("raw, clean", [("Hello", "hello"), ("Café-2!", "caf2"),
                                        ("  A b\tC ", "abc"), ("ÀÉ", ""), ("2018", "2018")])
def test_normalize(raw, clean):
    assert charset.normalize(raw) == clean


def test_encode_pads_cuts_and_rejects_empty():
    targets, lengths = charset.encode(["ab", "Z9"], max_length=3)
    assert targets.tolist() == [[11, 12, 0], [36, 10, 0]]
    assert lengths.tolist() == [2, 2]
    targets, lengths = charset.encode(["abcdef"], max_length=4)
    assert lengths.tolist() == [4]
    with pytest.raises(ValueError, match="empty"):
        charset.encode(["!!"])


def test_greedy_decode_collapses_repeats_and_blanks():
    # frames: a a - a b b - - 1  -> "aab1"
    frames = [11, 11, 0, 11, 12, 12, 0, 0, 2]
    logits = torch.full((1, len(frames), 37), -5.0)
    logits[0, torch.arange(len(frames)), torch.tensor(frames)] = 5.0
    assert charset.greedy_decode(logits) == ["aab1"]
    with pytest.raises(ValueError):
        charset.greedy_decode(torch.zeros(1, 4, 10))
