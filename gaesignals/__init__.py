"""gaesignals: deferred signals for web apps, kept in memcache.

``Signal(name).send(data)`` stores a payload and returns; ``deliver(mapping)`` later runs the
handlers. See the README for the delivery modes and what each guarantees.
"""

from .config import configure
from .delivery import (
    SignalMapping,
    dead_letters,
    deliver,
    pass_signal_name,
    purge_dead_letters,
    requeue_dead_letters,
)
from .exceptions import (
    BadFrame,
    ConfigurationError,
    GaeSignalsError,
    InvalidSignalName,
    PayloadTooLarge,
    QueueFull,
    StoreUnavailable,
    UnserializablePayload,
)
from .middleware import SignalsMiddleware
from .signals import Contention, Signal, send, send_multi

__all__ = [
    "BadFrame",
    "ConfigurationError",
    "Contention",
    "GaeSignalsError",
    "InvalidSignalName",
    "PayloadTooLarge",
    "QueueFull",
    "Signal",
    "SignalMapping",
    "SignalsMiddleware",
    "StoreUnavailable",
    "UnserializablePayload",
    "configure",
    "dead_letters",
    "deliver",
    "pass_signal_name",
    "purge_dead_letters",
    "requeue_dead_letters",
    "send",
    "send_multi",
]
