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
    send_now,
)
from .exceptions import (
    BadFrame,
    ConfigurationError,
    GaeSignalsError,
    InvalidSignalName,
    PartialFailure,
    PayloadTooLarge,
    QueueFull,
    StoreUnavailable,
    UnserializablePayload,
)
from .middleware import SignalsMiddleware
from .registry import (
    Registry,
    SignalSpec,
    autodiscover,
    connect,
    declare,
    disconnect,
    receiver,
    registry,
)
from .signals import Contention, Signal, send, send_multi
from .stats import Pending, health, pending, stats

__all__ = [
    "BadFrame",
    "ConfigurationError",
    "Contention",
    "GaeSignalsError",
    "InvalidSignalName",
    "PartialFailure",
    "PayloadTooLarge",
    "Pending",
    "QueueFull",
    "Registry",
    "Signal",
    "SignalMapping",
    "SignalSpec",
    "SignalsMiddleware",
    "StoreUnavailable",
    "UnserializablePayload",
    "autodiscover",
    "configure",
    "connect",
    "dead_letters",
    "declare",
    "deliver",
    "disconnect",
    "health",
    "pass_signal_name",
    "pending",
    "purge_dead_letters",
    "receiver",
    "registry",
    "requeue_dead_letters",
    "send",
    "send_multi",
    "send_now",
    "stats",
]
