"""What deliveries derive from a mapping and keep across calls: its runners and key layout.

Kept beside the mapping (a weak dictionary keyed by it), so :class:`~gaesignals.SignalMapping`
stays a plain description of signals and handlers. Each delivery checks that what it finds
still applies (the same settings, the same declarations) and derives anew when not.
"""

from __future__ import annotations

import weakref
from collections.abc import Collection, Mapping

from ..accounting import QuietUntil
from ..config import Settings
from ..keys import SignalKeys, shard_queues, signal_keys
from ..mapping import SignalMapping
from ..queue.spread import kept_markers, reach, sweeps, widths
from ..registration import SignalSpec
from .runner import Runner


class Layout:
    """The keys a weak delivery of a mapping reads: each signal's keys, every queue key of
    every signal (all its shards, declared or spread; in a sweep, every shard a sender may
    use) in mapping order then shard order, each queue key's signal and its place in that
    order, each signal's runner, the width each signal is known to have, the keys a sweep reads
    past it (with the width a payload there shows), and what a spread signal's own queue key
    and anchors hold once emptied (its marker)."""

    __slots__ = (
        "beyond",
        "generation",
        "keys",
        "markers",
        "names",
        "order",
        "runners",
        "settings",
        "shards",
        "specs",
        "spreading",
        "timed",
        "unswept",
        "widths",
    )

    def __init__(
        self,
        plan: Plan,
        settings: Settings,
        specs: Mapping[str, SignalSpec],
        sweep: Collection[str] = (),
    ) -> None:
        self.settings = settings
        self.specs = specs
        self.generation = widths(settings).generation
        ns = settings.namespace
        self.keys: dict[str, SignalKeys] = {name: signal_keys(name, ns) for name in plan.signals}
        #: The own queue keys of the signals that may spread, which sweeps read in full, and
        #: until when none of them is due for a sweep.
        self.spreading = [k.queue for name, k in self.keys.items() if not specs[name].fixed]
        self.unswept = QuietUntil()
        read = reach(settings, self.keys, specs, sweep)
        self.widths, self.beyond = read.known, read.beyond
        self.shards = {
            name: shard_queues(self.keys[name].queue, n) for name, n in read.read.items()
        }
        self.markers = {
            queue: marker
            for n, k in self.keys.items()
            for queue, marker in kept_markers(settings, k.queue, specs[n].shards).items()
        }
        self.names = {queue: name for name, queues in self.shards.items() for queue in queues}
        self.order = {key: index for index, key in enumerate(self.names)}
        self.runners = {name: plan.runner(name, settings, specs[name]) for name in self.keys}
        #: The runners with a ttl, whose cut-off moves every delivery.
        self.timed = [runner for runner in self.runners.values() if runner.ttl is not None]


class Plan:
    """One mapping's prepared state: its runners, its weak layout, its lost-check quiet time."""

    def __init__(self, signals: SignalMapping) -> None:
        self.signals = signals
        self.runners: dict[str, Runner] = {}
        self.quiet = QuietUntil()
        self._layout: Layout | None = None

    def runner(self, name: str, settings: Settings, spec: SignalSpec) -> Runner:
        """``name``'s handlers made ready to run, kept while the settings and the declaration
        stay the same."""
        runner = self.runners.get(name)
        if runner is None or runner.settings is not settings or not _same(runner.spec, spec):
            runner = Runner(name, self.signals.handlers(name), settings, spec)
            self.runners[name] = runner
        else:
            runner.restart()
        return runner

    def layout(self, settings: Settings, specs: Mapping[str, SignalSpec]) -> Layout:
        """The weak delivery layout, kept while the settings, the declarations and the known
        widths stay; a sweep's, when one is due, made for that delivery alone."""
        kept = self._layout
        if (
            kept is None
            or kept.settings is not settings
            or kept.specs is not specs
            or kept.generation != widths(settings).generation
        ):
            kept = self._layout = Layout(self, settings, specs)
        due = sweeps.due(settings, kept.spreading, kept.unswept)
        return Layout(self, settings, specs, due) if due else kept


def _same(a: SignalSpec, b: SignalSpec) -> bool:
    return a is b or a == b


_plans: weakref.WeakKeyDictionary[SignalMapping, Plan] = weakref.WeakKeyDictionary()


def plan_of(signals: SignalMapping) -> Plan:
    """The prepared state of ``signals``, made on its first delivery."""
    plan = _plans.get(signals)
    if plan is None:
        plan = _plans[signals] = Plan(signals)
    return plan
