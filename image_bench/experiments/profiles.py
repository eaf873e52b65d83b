"""The profiles live in ``image_bench.profiles`` (below data/ and experiments/, which both read
them); this name stays for the report layer, which imports them from here."""

from image_bench.profiles import DEFAULT_RESULTS, PROFILES, Profile, get_profile

__all__ = ["DEFAULT_RESULTS", "PROFILES", "Profile", "get_profile"]
