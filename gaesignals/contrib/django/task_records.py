"""Where :mod:`.tasks` keeps each task's result: one JSON record per result id, in the
gaesignals store, for ``RESULT_TTL`` seconds.

The store is a cache, so a record may be evicted before its time: reading it then finds
nothing, and :meth:`~.tasks.SignalsBackend.get_result` says so
(``TaskResultDoesNotExist``); nothing ever reads as a success it did not record. With a
gaesignals secret key the records are signed as frames are, and one that does not verify
reads as missing too (and is logged): a planted record cannot claim a result.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from typing import Any

from ...config import Settings

logger = logging.getLogger("gaesignals")

#: The result ids the backend makes (Django's ``get_random_string(32)``), and any other id a
#: caller may ask for that is safe in a key: anything else cannot name a record.
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: What every record holds (what :mod:`.tasks` writes, and a task's payload is).
FIELDS = frozenset(
    (
        "id",
        "task",
        "queue",
        "backend",
        "run_after",
        "args",
        "kwargs",
        "status",
        "enqueued_at",
        "started_at",
        "last_attempted_at",
        "finished_at",
        "errors",
        "worker_ids",
        "return_value",
    )
)
#: Signed records begin with their tag; unsigned ones with this.
_UNSIGNED = b"-"


def record_key(result_id: str, namespace: str) -> str:
    """The cache key of one result's record: beside the signals' keys, of its own kind."""
    return f"gs:{namespace}:tr:{{{result_id}}}"


def valid_id(result_id: object) -> bool:
    return isinstance(result_id, str) and _ID.fullmatch(result_id) is not None


def _tag(secret: bytes, key: str, body: bytes) -> bytes:
    return hmac.new(secret, key.encode() + b"\0" + body, hashlib.sha256).hexdigest().encode()


def _pack(record: dict[str, Any], key: str, settings: Settings) -> bytes:
    body = json.dumps(record, separators=(",", ":")).encode()
    head = _tag(settings.secret_keys[0], key, body) if settings.secret_keys else _UNSIGNED
    return head + b" " + body


def _unpack(raw: bytes, key: str, settings: Settings) -> dict[str, Any] | None:
    head, _, body = raw.partition(b" ")
    if settings.secret_keys:
        if not any(hmac.compare_digest(_tag(s, key, body), head) for s in settings.secret_keys):
            logger.warning("gaesignals: the task result at %s is not signed by our keys", key)
            return None
    elif head != _UNSIGNED:
        logger.warning("gaesignals: the task result at %s is signed, and no key is set", key)
        return None
    try:
        record = json.loads(body)
    except ValueError:
        logger.warning("gaesignals: the task result at %s is not JSON", key)
        return None
    if not isinstance(record, dict) or not record.keys() >= FIELDS:
        logger.warning("gaesignals: the task result at %s is not a record", key)
        return None
    return record


def write(record: dict[str, Any], settings: Settings, ttl: int) -> None:
    """Store ``record`` under its ``id`` for ``ttl`` seconds (replacing what was there)."""
    key = record_key(record["id"], settings.namespace)
    with settings.store.connection() as conn:
        conn.set_many({key: _pack(record, key, settings)}, expire=ttl)


def read(result_id: str, settings: Settings) -> dict[str, Any] | None:
    """The record of ``result_id``, or None: never stored, evicted, expired or not ours."""
    if not valid_id(result_id):
        return None
    key = record_key(result_id, settings.namespace)
    with settings.store.connection() as conn:
        item = conn.gets_many([key]).get(key)
    return None if item is None else _unpack(item[0], key, settings)


def delete(result_id: str, settings: Settings) -> None:
    with settings.store.connection() as conn:
        conn.delete_many([record_key(result_id, settings.namespace)])
