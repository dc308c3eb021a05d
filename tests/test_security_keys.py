"""Secret keys: rotation (frames signed with a retired key still read, new ones signed with the
first key) and the checks on the keys themselves (length, bytes-like values, the environment)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

import gaesignals
from gaesignals import ConfigurationError, frames, send
from gaesignals.config import get_settings
from gaesignals.stores.memory import MemoryStore

from .conftest import RawAccess
from .security_support import KEY_NEW, KEY_OLD, collector, queue_key, run_deliver, use

TEXT_KEY_OLD = "old-test-key-0123456789abcdefghijklmnop"
TEXT_KEY_NEW = "new-test-key-0123456789abcdefghijklmnop"


# -- key rotation and configuration ---------------------------------------------------------------


def test_rotation_accepts_frames_signed_with_the_old_key(raw: RawAccess, reliable: bool) -> None:
    """Frames signed with the old key are accepted when the keys are [new, old]."""
    use(raw, secret_key=KEY_OLD)
    send("rot", "from-old")
    use(raw, secret_key=[KEY_NEW, KEY_OLD])
    send("rot", "from-new")
    got, handler = collector()
    assert run_deliver("rot", handler, reliable) == 2
    assert got == ["from-old", "from-new"]


def test_rotation_signs_with_the_first_key(raw: RawAccess) -> None:
    """With keys [new, old], new frames are signed with new: they verify with [new] alone and
    fail with [old] alone."""
    use(raw, secret_key=[KEY_NEW, KEY_OLD])
    send("rot", "x")
    key = queue_key("rot")
    value = raw.get(key) or b""
    found, bad = frames.parse(value, key.encode(), [KEY_NEW])
    assert len(found) == 1 and bad == []
    found, bad = frames.parse(value, key.encode(), [KEY_OLD])
    new_id = frames.key_id(KEY_NEW).hex()
    assert found == [] and [b.reason for b in bad] == [
        f"signed with key id {new_id}, not held here"
    ]


def test_retired_key_frames_are_held_for_a_deliverer_holding_it(
    raw: RawAccess, reliable: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Once the old key is no longer listed, frames it signed are held (logged with both key
    ids), never dropped, and a deliverer that lists it again delivers them."""
    use(raw, secret_key=KEY_OLD)
    send("rot", "from-old")
    use(raw, secret_key=[KEY_NEW])
    send("rot", "from-new")
    got, handler = collector()
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        assert run_deliver("rot", handler, reliable) == 1
    assert got == ["from-new"]
    old_id, new_id = frames.key_id(KEY_OLD).hex(), frames.key_id(KEY_NEW).hex()
    assert f"signed with key id {old_id} wait; this process holds {new_id}" in caplog.text
    use(raw, secret_key=[KEY_NEW, KEY_OLD])
    assert run_deliver("rot", handler, reliable) == 1
    assert got == ["from-new", "from-old"]


@pytest.mark.parametrize(
    "secret_key",
    [
        "k" * 31,
        b"k" * 31,
        "  " + "k" * 31 + "\n",  # str keys are stripped before they are measured
        "\u00e9" * 15,  # 30 bytes of UTF-8
        [KEY_NEW, b"short"],
        ["k" * 40, ""],
    ],
    ids=["str31", "bytes31", "str31-padded", "utf8-30", "list-one-short", "list-one-empty"],
)
def test_short_secret_key_is_refused(secret_key: Any) -> None:
    """Any key shorter than 32 bytes, alone or in a rotation list, raises ConfigurationError,
    whose message does not echo the key."""
    with pytest.raises(ConfigurationError) as caught:
        gaesignals.configure(store=MemoryStore(), secret_key=secret_key)
    assert "kkkk" not in str(caught.value) and "short" not in str(caught.value)


def test_32_byte_keys_are_accepted() -> None:
    """Exactly 32 bytes is enough, measured in bytes (16 two-byte characters count as 32)."""
    settings = gaesignals.configure(store=MemoryStore(), secret_key=["\u00e9" * 16, b"k" * 32])
    assert settings.secret_keys == (("\u00e9" * 16).encode(), b"k" * 32)


@pytest.mark.parametrize(
    "wrap",
    [bytearray, memoryview, lambda key: [bytearray(key)], lambda key: (memoryview(key),)],
    ids=["bytearray", "memoryview", "list-of-bytearray", "tuple-of-memoryview"],
)
def test_bytes_like_secret_key_is_not_turned_into_zero_keys(wrap: Callable[[bytes], Any]) -> None:
    """A bytes-like key (alone or in a list) is used as it is or refused; it never becomes
    the all-zero keys that iterating its bytes as ints would make."""
    key = TEXT_KEY_NEW.encode()  # every byte >= 32, so no accidental "too short" refusal
    try:
        settings = gaesignals.configure(store=MemoryStore(), secret_key=wrap(key))
    except (TypeError, ConfigurationError):
        return
    assert settings.secret_keys == (key,)


def test_secret_key_env_list_is_honoured(
    raw: RawAccess, monkeypatch: pytest.MonkeyPatch, reliable: bool
) -> None:
    """GAESIGNALS_SECRET_KEY is a comma-separated rotation list (blanks and spaces ignored):
    the first key signs, every listed key verifies."""
    from gaesignals import config

    for name in ("GAESIGNALS_STORE", "GAE_ENV", "GAE_APPLICATION"):
        monkeypatch.delenv(name, raising=False)
    use(raw, secret_key=TEXT_KEY_OLD)
    send("env", "from-old")
    monkeypatch.setenv("GAESIGNALS_SECRET_KEY", f" {TEXT_KEY_NEW} , {TEXT_KEY_OLD} ,")
    config.reset()
    assert get_settings().secret_keys == (TEXT_KEY_NEW.encode(), TEXT_KEY_OLD.encode())
    gaesignals.configure(store=raw.store)  # secret_key left out: read from the environment
    send("env", "from-new")
    key = queue_key("env")
    found, _ = frames.parse(raw.get(key) or b"", key.encode(), [TEXT_KEY_NEW.encode()])
    assert len(found) == 1  # only the frame sent after the switch is signed with the new key
    got, handler = collector()
    assert run_deliver("env", handler, reliable) == 2
    assert got == ["from-old", "from-new"]


def test_short_secret_key_in_env_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short key anywhere in GAESIGNALS_SECRET_KEY fails configuration, not silently."""
    from gaesignals import config

    monkeypatch.setenv("GAESIGNALS_SECRET_KEY", f"{TEXT_KEY_NEW},too-short")
    monkeypatch.setenv("GAESIGNALS_STORE", "memory://")
    config.reset()
    with pytest.raises(ConfigurationError):
        get_settings()
