"""gaesignals: deferred signals for web apps, kept in memcache.

``Signal(name).send(data)`` stores a payload and returns; ``deliver(mapping)`` later runs the
handlers. The documentation's :doc:`delivering` page gives the delivery modes and what each
guarantees.
"""

from .browser.messages import send_to_browser
from .cancelling import CancelResult, cancel, purge
from .config import Settings, configure
from .delivery import (
    DeadLetter,
    adeliver,
    dead_letter_details,
    dead_letters,
    deliver,
    purge_dead_letters,
    requeue_dead_letters,
)
from .eager import asend_now, send_now
from .exceptions import (
    BadFrame,
    ConfigurationError,
    Contention,
    EventLoopRunning,
    GaeSignalsError,
    InvalidCoalesceKey,
    InvalidDelay,
    InvalidMapping,
    InvalidPayloadId,
    InvalidSignalName,
    MissingExtra,
    PartialFailure,
    PayloadTooLarge,
    QueueFull,
    Reject,
    Retry,
    StoreUnavailable,
    UnserializablePayload,
)
from .inspection import Pending, health, pending, stats
from .mapping import SignalMapping, pass_signal_name
from .middleware import SignalsMiddleware
from .registration import (
    Registry,
    RetryPolicy,
    SignalSpec,
    autodiscover,
    connect,
    declare,
    disconnect,
    receiver,
    registry,
)
from .sending import Receipt, Signal, asend, asend_multi, send, send_multi

#: The release, read by the packaging too (pyproject.toml's version is this attribute).
__version__ = "0.1.0.dev0"

__all__ = [
    "BadFrame",
    "CancelResult",
    "ConfigurationError",
    "Contention",
    "DeadLetter",
    "EventLoopRunning",
    "GaeSignalsError",
    "InvalidCoalesceKey",
    "InvalidDelay",
    "InvalidMapping",
    "InvalidPayloadId",
    "InvalidSignalName",
    "MissingExtra",
    "PartialFailure",
    "PayloadTooLarge",
    "Pending",
    "QueueFull",
    "Receipt",
    "Registry",
    "Reject",
    "Retry",
    "RetryPolicy",
    "Settings",
    "Signal",
    "SignalMapping",
    "SignalSpec",
    "SignalsMiddleware",
    "StoreUnavailable",
    "UnserializablePayload",
    "adeliver",
    "asend",
    "asend_multi",
    "asend_now",
    "autodiscover",
    "cancel",
    "configure",
    "connect",
    "dead_letter_details",
    "dead_letters",
    "declare",
    "deliver",
    "disconnect",
    "health",
    "pass_signal_name",
    "pending",
    "purge",
    "purge_dead_letters",
    "receiver",
    "registry",
    "requeue_dead_letters",
    "send",
    "send_multi",
    "send_now",
    "send_to_browser",
    "stats",
]
