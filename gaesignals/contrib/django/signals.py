"""``AsyncSignal``: a ``django.dispatch.Signal`` whose ``send`` defers through gaesignals.

::

    order_paid = AsyncSignal("orders.paid", reliable=True)   # in yourapp/signals.py

    @receiver(order_paid, sender=Order)                        # django.dispatch.receiver
    def email_receipt(sender, order, **kwargs): ...

    order_paid.send(sender=Order, order=order)      # stores the payload and returns []
    order_paid.send_now(sender=Order, order=order)  # Signal.send: the receivers run now

Receivers keep Django's signature, ``(sender, **kwargs)``, and are called by whatever delivers
the signal's name (the middleware, ``manage.py deliver_signals``, the cron view, or
``gaesignals.deliver()``) in a process where they are connected: put them where
``autodiscover`` finds them, in an installed app's ``signals.py``.

Model instances and model classes anywhere in the sender and keyword arguments (inside dicts,
lists and tuples too) travel as references, ``(app_label, model_name, pk)``, and are fetched
again (with the model's base manager) on delivery, so receivers see the row as it is then, and
the JSON codec carries them too. If a referenced row no longer exists, the payload is skipped
with a logged warning: the receivers are not called and it is not retried (the row will not
come back). Other values must suit the codec (any picklable value, or JSON types).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.apps import apps
from django.db import models, transaction
from django.dispatch import Signal

from ...codec import encode_payload
from ...config import get_settings
from ...exceptions import GaeSignalsError
from ...keys import check_name, signal_keys
from ...registration import Registry, registry
from ...sending import send

logger = logging.getLogger("gaesignals")

#: A dict with this one key is a model reference: [app_label, model_name] or [..., pk].
MODEL_REF = "__gaesignals_model__"


class AsyncSignal(Signal):
    """A Django signal named for gaesignals; ``send`` defers, ``send_now`` runs at once.

    ``name`` is the gaesignals signal the payloads go to (``"orders.paid"``); ``reliable``,
    ``lease`` and ``max_attempts`` declare its delivery options (see
    :func:`gaesignals.declare`). Connecting the first receiver registers the signal with the
    gaesignals registry, so ``deliver()`` picks it up; disconnecting the last one removes it.
    """

    def __init__(
        self,
        name: str,
        *,
        reliable: bool | None = None,
        lease: int | None = None,
        max_attempts: int | None = None,
        use_caching: bool = False,
    ) -> None:
        super().__init__(use_caching=use_caching)
        self.name = check_name(name)
        given = {"reliable": reliable, "lease": lease, "max_attempts": max_attempts}
        self.options = {key: value for key, value in given.items() if value is not None}

    def __repr__(self) -> str:
        return f"AsyncSignal({self.name!r})"

    # -- receivers ---------------------------------------------------------------------------

    def connect(
        self,
        receiver: Callable[..., Any],
        sender: Any = None,
        weak: bool = True,
        dispatch_uid: Any = None,
    ) -> None:
        super().connect(receiver, sender, weak, dispatch_uid)
        self.register()

    def disconnect(
        self,
        receiver: Callable[..., Any] | None = None,
        sender: Any = None,
        dispatch_uid: Any = None,
    ) -> bool:
        removed: bool = super().disconnect(receiver, sender, dispatch_uid)
        if not self.receivers:
            registry.disconnect(self.name, self.deliver)
        return removed

    def register(self, registry: Registry = registry) -> None:
        """Connect this signal's delivery to ``registry`` (idempotent). Done by ``connect``;
        call it again after ``gaesignals.registry.clear()``."""
        registry.connect(self.name, self.deliver, **self.options)

    # -- sending -----------------------------------------------------------------------------

    def send(self, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
        """Store ``sender`` and ``named`` for later delivery; returns ``[]`` (no receiver ran).

        Inside ``transaction.atomic`` (of the default database) the payload is stored when the
        transaction commits, and never if it rolls back, so a deliverer cannot look for rows
        not yet committed; the payload is still checked against the codec now. Raises what
        :func:`gaesignals.send` raises (at commit, inside a transaction).
        """
        self._send(sender, named, robust=False)
        return []

    def send_robust(self, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
        """:meth:`send`, never raising: a failure to store is logged and returned as
        ``[(self, error)]`` (inside a transaction, Django logs one at commit)."""
        try:
            self._send(sender, named, robust=True)
        except Exception as error:
            logger.error("could not send %r", self, exc_info=error)
            return [(self, error)]
        return []

    def _send(self, sender: Any, named: dict[str, Any], *, robust: bool) -> None:
        payload = {"sender": to_refs(sender), "kwargs": to_refs(named)}
        if transaction.get_connection().in_atomic_block:
            settings = get_settings()
            encode_payload(self.name, payload, signal_keys(self.name, settings.namespace), settings)
            transaction.on_commit(lambda: send(self.name, payload), robust=robust)
        else:
            send(self.name, payload)

    def send_now(self, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
        """``django.dispatch.Signal.send``: run the receivers now with these very objects and
        return ``[(receiver, response)]``; a receiver's exception propagates."""
        result: list[tuple[Any, Any]] = super().send(sender, **named)
        return result

    async def asend(self, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
        """:meth:`send` from async code."""
        return await sync_to_async(self.send)(sender, **named)

    async def asend_robust(self, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
        """:meth:`send_robust` from async code."""
        return await sync_to_async(self.send_robust)(sender, **named)

    # -- delivering --------------------------------------------------------------------------

    def deliver(self, data: Any) -> None:
        """The gaesignals handler of this signal: call every connected receiver with the
        payload's sender and keyword arguments, model references fetched again.

        Each receiver runs even if another raised (Django's ``send_robust`` logs each failure
        on ``django.dispatch``); if any raised, this raises too, so reliable delivery retries
        the payload (and every receiver with it).
        """
        if not (isinstance(data, dict) and isinstance(data.get("kwargs"), dict)):
            raise GaeSignalsError(f"not a payload of {self!r}: {type(data).__name__}")
        try:
            sender = from_refs(data.get("sender"))
            kwargs = from_refs(data["kwargs"])
        except MissingRow as missing:
            logger.warning("a payload of %r skipped: %s", self, missing)
            return
        results = Signal.send_robust(self, sender, **kwargs)
        failed = [(receiver, error) for receiver, error in results if isinstance(error, Exception)]
        if failed:
            raise GaeSignalsError(
                f"{len(failed)} receiver(s) of {self!r} failed: "
                + "; ".join(f"{receiver!r}: {error!r}" for receiver, error in failed)
            )


class MissingRow(LookupError):
    """A model instance referenced by a payload no longer exists."""


def to_refs(value: Any) -> Any:
    """``value`` with every model instance and model class replaced by a reference."""
    if isinstance(value, models.Model):
        if value.pk is None:
            raise ValueError(f"{value!r} is not saved: only saved instances can be sent")
        pk = value.pk
        if isinstance(pk, tuple):  # a composite primary key
            pk = list(pk)
        elif not isinstance(pk, int | str | list):
            pk = str(pk)  # UUID and friends: lookups accept their text form
        return {MODEL_REF: [value._meta.app_label, value._meta.model_name, pk]}
    if isinstance(value, type) and issubclass(value, models.Model):
        meta: Any = value._meta  # type: ignore[attr-defined]
        return {MODEL_REF: [meta.app_label, meta.model_name]}
    if isinstance(value, dict):
        return {key: to_refs(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_refs(item) for item in value]
    if type(value) is tuple:
        return tuple(to_refs(item) for item in value)
    return value


def from_refs(value: Any) -> Any:
    """The inverse of :func:`to_refs`: references become models and fresh instances; raises
    :class:`MissingRow` for a row that is gone and ``LookupError`` for an unknown model."""
    if isinstance(value, dict):
        if len(value) == 1 and MODEL_REF in value:
            return _fetch(value[MODEL_REF])
        return {key: from_refs(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_refs(item) for item in value]
    if type(value) is tuple:
        return tuple(from_refs(item) for item in value)
    return value


def _fetch(ref: Any) -> Any:
    if not isinstance(ref, list | tuple) or len(ref) not in (2, 3):
        raise GaeSignalsError(f"malformed model reference {ref!r}")
    model = apps.get_model(ref[0], ref[1])
    if len(ref) == 2:
        return model
    pk = tuple(ref[2]) if isinstance(ref[2], list) else ref[2]
    try:
        return model._base_manager.get(pk=pk)
    except model.DoesNotExist:
        raise MissingRow(f"{model._meta.label} with pk {pk!r} no longer exists") from None
