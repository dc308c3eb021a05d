"""Payloads to frames and back: the configured codec (pickle or JSON) around the frame format.

Encoding refuses a payload that could never fit in the store before anything is written.
Decoding accepts JSON frames always, and pickled frames while the codec is pickle or a secret
key verified them (a sender holding the key wrote them: switching the codec to JSON loses none
of the payloads pending). Without a key, choosing JSON stops unpickling: delivery leaves
pickled frames queued for a deliverer whose codec is pickle (see :mod:`gaesignals.frames`).
"""

from __future__ import annotations

import json
import pickle
from typing import Any

from . import frames
from .config import Settings
from .exceptions import BadFrame, PayloadTooLarge, UnserializablePayload
from .keys import SignalKeys

PICKLE_PROTOCOL = 5


def encode_payload(
    name: str, data: Any, keys: SignalKeys, settings: Settings, meta: bytes = b""
) -> bytes:
    """Serialize and frame one payload of signal ``name`` (whose keys are ``keys``) with its
    frame ``meta``data, refusing one that could never fit in the store. Errors name the
    signal, not its internal key."""
    try:
        if settings.codec == "json":
            body = json.dumps(data, separators=(",", ":")).encode("utf-8")
        else:
            body = pickle.dumps(data, protocol=PICKLE_PROTOCOL)
    except Exception as error:
        raise UnserializablePayload(
            f"cannot {settings.codec}-encode the payload for signal {name!r}: {error}"
        ) from error
    frame = frames.encode(
        body,
        keys.queue.encode(),
        settings.secret_keys,
        json_body=settings.codec == "json",
        meta=meta,
    )
    if len(frame) > settings.store.max_value_size:
        raise PayloadTooLarge(
            f"the payload for signal {name!r} is {len(frame)} bytes framed; the store's limit is "
            f"{settings.store.max_value_size}"
        )
    return frame


def decode(frame: frames.Frame, settings: Settings) -> Any:
    """Deserialize a verified frame's body (see the module docstring for what is refused)."""
    if frame.flags & frames.FLAG_JSON:
        return json.loads(frame.body)
    if settings.codec != "pickle" and not settings.secret_keys:
        raise BadFrame("a pickled frame arrived while the codec is json; refused")
    return pickle.loads(frame.body)
