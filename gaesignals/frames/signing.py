"""Frame tags and key ids: what signs a frame, and how a reader verifies one."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from .layout import KEY_ID_SIZE, TAG_SIZE

_BLOCK = 64  # SHA-256's block size, and the longest key BLAKE2b takes
_KEY_ID_LABEL = b"gaesignals key id"


@lru_cache(maxsize=1024)
def _keyed(secret_key: bytes, signal_key: bytes) -> Any:
    """Keyed BLAKE2b-256 of ``secret_key`` (hashed first if longer than BLAKE2b's 64-byte key
    limit), already fed the signal's key and a zero byte: the state each frame's tag copies."""
    if len(secret_key) > _BLOCK:
        secret_key = hashlib.blake2b(secret_key).digest()
    state = hashlib.blake2b(key=secret_key, digest_size=TAG_SIZE)
    state.update(signal_key + b"\x00")
    return state


@lru_cache(maxsize=64)
def key_id(secret_key: bytes) -> bytes:
    """The 2-byte id a frame signed with ``secret_key`` carries: the first bytes of
    HMAC-SHA256(key, b"gaesignals key id"). One-way, and too short to test a guess of the key
    against anything but itself; it only tells which configured key signed a frame."""
    return hmac.new(secret_key, _KEY_ID_LABEL, hashlib.sha256).digest()[:KEY_ID_SIZE]


def key_ids(secret_keys: Sequence[bytes]) -> list[str]:
    """The ids of ``secret_keys``, in hex, as logs and reports show them."""
    return [key_id(key).hex() for key in secret_keys]


@lru_cache(maxsize=64)
def _by_key_id(secret_keys: tuple[bytes, ...]) -> dict[bytes, tuple[bytes, ...]]:
    """``secret_keys`` by their ids (two keys may share an id: each is tried)."""
    ids: dict[bytes, tuple[bytes, ...]] = {}
    for key in secret_keys:
        ids[key_id(key)] = (*ids.get(key_id(key), ()), key)
    return ids


@lru_cache(maxsize=1024)
def _keyed_by_id(secret_keys: tuple[bytes, ...], signal_key: bytes) -> dict[int, list[Any]]:
    """Each key id's keyed states (:func:`_keyed`) by the id read as a number, as
    :meth:`Walker.signed_bodies` looks them up."""
    return {
        int.from_bytes(kid, "big"): [_keyed(key, signal_key) for key in keys]
        for kid, keys in _by_key_id(secret_keys).items()
    }


@lru_cache(maxsize=1024)
def _signer(secret_key: bytes, signal_key: bytes) -> tuple[bytes, Any]:
    """What signing a frame for ``signal_key`` with ``secret_key`` starts from: the key's id
    and the keyed state of :func:`_keyed`, looked up together (one cache lookup per send)."""
    return key_id(secret_key), _keyed(secret_key, signal_key)


def _tag(secret_key: bytes, signal_key: bytes, message: bytes) -> bytes:
    """A frame's tag: keyed BLAKE2b-256 (a MAC by design: the key is part of the
    hash's own input, no HMAC nesting needed) over the signal's key, a zero byte and
    ``message``; a copied state and one update."""
    state = _keyed(secret_key, signal_key).copy()
    state.update(message)
    tag: bytes = state.digest()
    return tag


def _verify(
    secret_keys: Sequence[bytes],
    signal_key: bytes,
    version_flags: bytes | memoryview,
    ident: bytes | memoryview,
    body: bytes,
    tag: bytes,
) -> bool:
    """Whether ``tag`` was made by one of ``secret_keys`` over the frame's version and flags
    bytes, its id and its body."""
    message = b"".join((version_flags, ident, body))
    for key in secret_keys:  # a loop, not any(): a generator per frame costs more than a check
        if hmac.compare_digest(_tag(key, signal_key, message), tag):
            break
    else:
        return False
    return True
