"""Where :mod:`.tasks` keeps each task's result: one JSON record per result id, in the
gaesignals store, for ``RESULT_TTL`` seconds.

The store is a cache, so a record may be evicted before its time: reading it then finds
nothing, and :meth:`~.tasks.SignalsBackend.get_result` says so
(``TaskResultDoesNotExist``); nothing ever reads as a success it did not record. With a
gaesignals secret key the records are signed as frames are, and one that does not verify
reads as missing too (and is logged): a planted record cannot claim a result.

Each task's payload carries a random ``nonce`` that its record never holds; every record
written with the payload in hand bears its ``seal``, an HMAC under that nonce. The worker
believes a record's progress (a success not to repeat, attempts spent) only if it bears the
seal of the payload it is running: without a secret key, a record planted by someone who has
not read the queue cannot stop or skip a task.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from datetime import datetime
from typing import Any, TypeGuard

from ...config import Settings
from ...queue import records

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
#: What the worker takes from a record, beside the payload: how far the task got.
PROGRESS = (
    "status",
    "started_at",
    "last_attempted_at",
    "finished_at",
    "errors",
    "worker_ids",
    "return_value",
)
STATUSES = frozenset(("READY", "RUNNING", "FAILED", "SUCCESSFUL"))
_TEXTS = ("task", "queue", "backend")
_MOMENTS = ("run_after", "enqueued_at", "started_at", "last_attempted_at", "finished_at")
#: The payload's secret, and the record's proof of it.
NONCE = "nonce"
SEAL = "seal"
#: Signed records begin with their tag; unsigned ones with this.
_UNSIGNED = b"-"


def record_key(result_id: str, namespace: str) -> str:
    """The cache key of one result's record: beside the signals' keys, of its own kind."""
    return f"gs:{namespace}:tr:{{{result_id}}}"


def valid_id(result_id: object) -> bool:
    return isinstance(result_id, str) and _ID.fullmatch(result_id) is not None


def is_record(found: object) -> TypeGuard[dict[str, Any]]:
    """Whether ``found`` has every field of a record (or a payload), each of its type: what
    reads a record can then index it without a second thought."""
    if not isinstance(found, dict) or not found.keys() >= FIELDS:
        return False
    errors, workers = found["errors"], found["worker_ids"]
    return (
        valid_id(found["id"])
        and found["status"] in STATUSES
        and all(isinstance(found[field], str) for field in _TEXTS)
        and all(_is_moment(found[field]) for field in _MOMENTS)
        and isinstance(found["args"], list)
        and isinstance(found["kwargs"], dict)
        and isinstance(errors, list)
        and all(_is_error(error) for error in errors)
        and isinstance(workers, list)
        and all(isinstance(worker, str) for worker in workers)
    )


def is_payload(found: object) -> TypeGuard[dict[str, Any]]:
    """Whether ``found`` is a task's payload: a record with its nonce."""
    return is_record(found) and isinstance(found.get(NONCE), str)


def _seal(record: dict[str, Any], nonce: str) -> str:
    body = {field: value for field, value in record.items() if field not in (NONCE, SEAL)}
    text = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return hmac.new(nonce.encode(), text, hashlib.sha256).hexdigest()


def sealed(record: dict[str, Any], payload: dict[str, Any]) -> bool:
    """Whether ``record`` was written with ``payload`` in hand (bears its seal)."""
    seal = record.get(SEAL)
    return isinstance(seal, str) and hmac.compare_digest(seal, _seal(record, payload[NONCE]))


def _is_moment(moment: object) -> bool:
    """A moment is None or ISO 8601 text."""
    if moment is None:
        return True
    try:
        datetime.fromisoformat(moment)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _is_error(error: object) -> bool:
    """An error is ``[exception class path, traceback]``."""
    return isinstance(error, list) and len(error) == 2 and all(isinstance(e, str) for e in error)


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
            logger.warning("the task result at %s is not signed by our keys", key)
            return None
    elif head != _UNSIGNED:
        logger.warning("the task result at %s is signed, and no key is set", key)
        return None
    try:
        record = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python walks
        logger.warning("the task result at %s is not JSON", key)
        return None
    if not is_record(record):
        logger.warning("the task result at %s is not a record", key)
        return None
    return record


def write(record: dict[str, Any], settings: Settings, ttl: int) -> None:
    """Store ``record`` under its ``id`` for ``ttl`` seconds (replacing what was there); one
    that holds its payload's nonce is stored with its seal instead."""
    if NONCE in record:
        nonce = record[NONCE]
        record = {field: value for field, value in record.items() if field != NONCE}
        record[SEAL] = _seal(record, nonce)
    key = record_key(record["id"], settings.namespace)
    records.keep(settings.store, key, _pack(record, key, settings), ttl)


def read(result_id: str, settings: Settings) -> dict[str, Any] | None:
    """The record of ``result_id``, or None: never stored, evicted, expired or not ours."""
    if not valid_id(result_id):
        return None
    key = record_key(result_id, settings.namespace)
    raw = records.fetch(settings.store, key)
    record = None if raw is None else _unpack(raw, key, settings)
    if record is not None and record["id"] != result_id:
        logger.warning("the task result at %s names another id", key)
        return None
    return record


def delete(result_id: str, settings: Settings) -> None:
    records.forget(settings.store, record_key(result_id, settings.namespace))
