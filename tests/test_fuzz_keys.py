"""Property tests of signal names and keys: keys are short printable ASCII, different names (or
namespaces) never share a key, and names past the limit are refused.

Each property is registered in ``fuzz_support.PROPERTIES``, for ``scripts/fuzz_long.py``."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from hypothesis import assume
from hypothesis import strategies as st

from gaesignals import InvalidSignalName, Signal
from gaesignals.keys import (
    MAX_NAME_LENGTH,
    SignalKeys,
    shard_queues,
    signal_keys,
    spread_key,
)
from gaesignals.stores import MAX_KEY_LENGTH

from .fuzz_support import fuzz

# -- signal names and keys ------------------------------------------------------------------------

SPECIAL = ["\x00", "\n", "\r", " ", "\t", ":", "\x7f", "!", "~", "\u00e9", "\ud800", "\udfff"]
SPECIAL += ["\U0001f600", "\ufffd", "h", "q", "l", "d", "c", "A"]
any_char = st.one_of(
    st.characters(exclude_categories=()),
    st.integers(0xD800, 0xDFFF).map(chr),  # lone surrogates: hypothesis leaves them out
    st.sampled_from(SPECIAL),
)
namespaces = st.from_regex(r"[A-Za-z0-9_-]{0,64}", fullmatch=True)
names = st.one_of(
    st.text(any_char, min_size=1, max_size=300),
    st.text(st.sampled_from(SPECIAL), min_size=1, max_size=20),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=260),
    st.builds(
        lambda n, c: "a" * (n - 1) + c,
        st.one_of(st.integers(170, 260), st.integers(1, MAX_NAME_LENGTH)),
        any_char,
    ),
)


def all_keys(name: str, namespace: str) -> list[str]:
    keys = signal_keys(name, namespace)
    named = [getattr(keys, field.name) for field in dataclasses.fields(SignalKeys)]
    return [*named, spread_key(keys.queue), *shard_queues(keys.queue, 16)[1:]]


def near(name: str) -> st.SearchStrategy[str]:
    """Valid names that differ from ``name`` a little, or look like its hashed form."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
    candidates = [
        name + "x",
        "x" + name,
        name[:-1],
        name + "\x00",
        name + " ",
        name.swapcase(),
        name.upper(),
        digest,
        name.encode("utf-8", "surrogatepass").decode("latin-1"),
        "a" * 242,
        "a" * 243,
    ]
    return st.sampled_from([c for c in candidates if 0 < len(c) <= MAX_NAME_LENGTH])


name_pairs = st.one_of(
    st.tuples(namespaces, names, namespaces, names),
    st.tuples(namespaces, names).flatmap(
        lambda pair: st.tuples(st.just(pair[0]), st.just(pair[1]), st.just(pair[0]), near(pair[1]))
    ),
)


@fuzz(500, name=names, namespace=namespaces)
def test_signal_keys_are_short_printable_ascii(name: str, namespace: str) -> None:
    """Any name up to the limit (NUL, newlines, surrogates, emoji, 4096 chars) maps to keys
    of at most 250 characters, all in 0x21-0x7e, one distinct key per role."""
    keys = all_keys(name, namespace)
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert len(key) <= MAX_KEY_LENGTH
        assert all(0x21 <= ord(c) <= 0x7E for c in key), key
        key.encode("ascii")


@fuzz(500, pair=name_pairs)
def test_different_names_never_share_a_key(pair: tuple[str, str, str, str]) -> None:
    """Two different (namespace, name) pairs never share any key, in any role."""
    ns_a, a, ns_b, b = pair
    assume((ns_a, a) != (ns_b, b))
    assert set(all_keys(a, ns_a)).isdisjoint(all_keys(b, ns_b))


def test_crafted_names_never_share_a_key() -> None:
    """Hand-picked near-collisions (plain vs hashed forms, the hashing boundary, Unicode
    normalisation, surrogate pairs, separators) all get distinct keys in every namespace."""
    hashed = "a b"
    crafted = [
        "a",
        "A",
        "a ",
        "a\x00",
        "a\n",
        "a:q",
        ":",
        "q:a",
        "qh:a",
        hashed,
        hashlib.sha256(hashed.encode()).hexdigest(),
        "\u00e9",
        "e\u0301",
        "\U0001f600",
        "\ud83d\ude00",
        "\ud800",
        "\udfff",
        "\ufffd",
        "a" * 178,
        "a" * 179,
        "a" * 242,
        "a" * 243,
        "a" * MAX_NAME_LENGTH,
        "a" * (MAX_NAME_LENGTH - 1) + "\x00",
    ]
    for namespace in ["", "a", "q", "qh", "gs", "tenant_b", "x" * 64]:
        keys = [key for name in crafted for key in all_keys(name, namespace)]
        assert len(set(keys)) == len(keys), namespace
        assert all(len(k) <= MAX_KEY_LENGTH for k in keys)
    everywhere = [k for ns in ["", "a", "x" * 64] for name in crafted for k in all_keys(name, ns)]
    assert len(set(everywhere)) == len(everywhere)


@fuzz(100, length=st.integers(MAX_NAME_LENGTH + 1, 4 * MAX_NAME_LENGTH), char=any_char)
def test_names_past_the_limit_are_refused(length: int, char: str) -> None:
    """Names longer than 4096 characters (and the empty name) raise InvalidSignalName."""
    for bad in (char * length, ""):
        with pytest.raises(InvalidSignalName):
            signal_keys(bad, "")
        with pytest.raises(InvalidSignalName):
            Signal(bad)
    all_keys(char * MAX_NAME_LENGTH, "")  # the limit itself is fine
