"""The commands that run once: deliver, pending, send, cancel, purge and dead-letters.

Each takes the parsed arguments, prints its result on stdout and returns an exit code; a
failure to report is a :class:`~gaesignals.cli.errors.CommandError`, or the library's own error.
Every line built from data is printed by :func:`~gaesignals.cli.output.say`, which escapes
its control characters. A command that would print nothing says so in one line, unless
``--quiet``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

from .. import config, delivery
from ..cancelling import CancelResult, cancel, purge
from ..inspection import Pending, overview, pending
from ..mapping import SignalMapping
from ..sending import send
from .errors import EXIT_ERROR, EXIT_OK, EXIT_STORE, CommandError
from .loading import load_mapping, signal_names
from .output import say, shown

#: What a command made on the process-local store tells the user: nobody else will see it.
PROCESS_LOCAL = (
    "gaesignals: warning: the store is the embedded in-process one (memory://, the default "
    "when GAESIGNALS_STORE is unset): no other process sees what this command sends, delivers "
    "or reads; set GAESIGNALS_STORE or --store to your app's cache (memcached://host:port, "
    "redis://host:port, ...)"
)


def warn_if_process_local(args: argparse.Namespace) -> None:
    """Say on stderr that the command works on a store only this process sees, when the
    command made that store itself (from the environment, the default or ``--store``): a
    program that configured a memory store and calls :func:`~gaesignals.cli.main` in-process
    shares it, and is not warned. Called once a command's inputs are checked, so a usage error
    stays one line."""
    if getattr(args, "store_made_here", False) and not config.get_settings().store.shared:
        print(PROCESS_LOCAL, file=sys.stderr, flush=True)


def signal_name(text: str) -> str:
    """A signal name given on the command line, refused when it is blank: a name of spaces is
    a valid key to the library, but from a shell it is a quoting slip."""
    if not text.strip():
        raise CommandError(f"a signal name must not be blank, got {text!r}")
    return text


class _Outcome:
    """Whether a handler of the payload being delivered raised, shared by the handlers of one
    signal: the first resets it, the last reads it."""

    def __init__(self) -> None:
        self.failed = False


class _Counted:
    """A handler wrapped to count, per signal, the payloads every handler took without raising:
    :func:`~gaesignals.deliver` returns only the total. The handlers of one payload run in
    order in one thread, so the first resets the payload's outcome and the last records it."""

    def __init__(
        self,
        handler: delivery.Handler,
        name: str,
        tally: Counter[str],
        outcome: _Outcome,
        first: bool,
        last: bool,
    ) -> None:
        self.handler, self.name, self.tally, self.outcome = handler, name, tally, outcome
        self.first, self.last = first, last
        if getattr(handler, "__gaesignals_pass_name__", False):
            self.__gaesignals_pass_name__ = True

    def __repr__(self) -> str:
        return repr(self.handler)  # what the library's log names

    def __call__(self, data: Any, **kwargs: Any) -> object:
        if self.first:
            self.outcome.failed = False
        try:
            return self.handler(data, **kwargs)
        except BaseException:
            self.outcome.failed = True
            raise
        finally:
            if self.last and not self.outcome.failed:
                self.tally[self.name] += 1


def counted(mapping: SignalMapping) -> tuple[SignalMapping, Counter[str]]:
    """``mapping`` with its handlers wrapped to count deliveries per signal, and the counter."""
    tally: Counter[str] = Counter()
    wrapped = []
    for name, handlers in mapping.items():
        outcome = _Outcome()
        last = len(handlers) - 1
        wrapped.append(
            (
                name,
                [
                    _Counted(handler, name, tally, outcome, index == 0, index == last)
                    for index, handler in enumerate(handlers)
                ],
            )
        )
    return SignalMapping(wrapped, lease=mapping.lease, max_attempts=mapping.max_attempts), tally


def deliver_once(args: argparse.Namespace, mapping: SignalMapping) -> tuple[int, Counter[str]]:
    """Deliver ``mapping`` as the options say: the total delivered, and the count per signal."""
    wrapped, tally = counted(mapping)
    total = delivery.deliver(
        wrapped,
        args.reliable,
        lease=args.lease,
        max_attempts=args.max_attempts,
        limit=args.limit,
    )
    return total, tally


def deliver(args: argparse.Namespace) -> int:
    mapping = load_mapping(args.target, args.autodiscover, verbose=args.verbose > 0)
    warn_if_process_local(args)
    total, tally = deliver_once(args, mapping)
    if args.json:
        print(json.dumps({"delivered": total, "signals": dict(tally)}))
    else:
        print(f"delivered {total} payload(s)")
        if args.verbose:
            for name in mapping:
                say(f"  {name}: {tally[name]}")
    return EXIT_OK


def show_pending(args: argparse.Namespace) -> int:
    if not args.names:
        return _list_pending(args)
    names = list(dict.fromkeys(signal_name(name) for name in args.names))
    warn_if_process_local(args)
    found = pending(names)
    _print_pending(args, {name: found[name] for name in names})
    return EXIT_OK


def _list_pending(args: argparse.Namespace) -> int:
    """``pending`` with no names: every signal known (from ``--app``, ``--autodiscover`` or
    the registry) that has payloads pending, read as the dashboard reads them."""
    names = signal_names(args.app, args.autodiscover, verbose=args.verbose > 0)
    if not names:
        raise CommandError(
            "no signal is registered or declared here: name the signals "
            "(gaesignals pending NAME...), or import the module that registers them with "
            "--app pkg.mod[:attr] or --autodiscover PKG"
        )
    warn_if_process_local(args)
    found = overview(names)
    if not found.reachable:
        raise CommandError(f"store unavailable: {found.error}", EXIT_STORE)
    rows = {name: r.pending for name, r in found.signals.items() if r.pending.count}
    if rows or args.json:
        _print_pending(args, rows)
    elif not args.quiet:
        say(f"nothing pending in {len(names)} signal(s): {', '.join(map(repr, names))}")
    return EXIT_OK


def _print_pending(args: argparse.Namespace, rows: dict[str, Pending]) -> None:
    if args.json:
        print(
            json.dumps(
                {
                    name: {
                        "count": p.count,
                        "bytes": p.bytes,
                        "oldest_age": p.oldest_age,
                        "waiting": p.waiting,
                        "next_due": p.next_due,
                        "debounced": p.debounced,
                    }
                    for name, p in rows.items()
                }
            )
        )
        return
    # Names as printed (escaped), so the columns line up with what is seen.
    width = max(len("signal"), *(len(shown(name)) for name in rows))
    print(f"{'signal':<{width}}  {'pending':>8}  {'bytes':>10}  {'waiting':>8}  oldest")
    for name, p in rows.items():
        age = "-" if p.oldest_age is None else f"{p.oldest_age:.1f}s"
        say(f"{shown(name):<{width}}  {p.count:>8}  {p.bytes:>10}  {p.waiting:>8}  {age}")


def send_one(args: argparse.Namespace) -> int:
    name = signal_name(args.name)
    text, source = args.data, "--data"
    if args.data_file is not None:
        source = "stdin" if args.data_file == "-" else args.data_file
        text = _read_data_file(args.data_file)
    data = None
    if text is not None:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CommandError(f"invalid JSON in {source}: {error}") from None
    warn_if_process_local(args)
    receipt = send(name, data, coalesce=args.coalesce)
    if args.json:
        print(json.dumps({"sent": 1, "id": receipt.id}))
    elif not args.quiet:
        say(f"sent 1 payload to {name!r}")
    return EXIT_OK


def _read_data_file(path: str) -> str:
    """The text of ``path``, or of stdin for ``-``."""
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as error:
        raise CommandError(f"cannot read --data-file: {error}") from None


def dead_letters(args: argparse.Namespace) -> int:
    signal_name(args.name)
    warn_if_process_local(args)
    if args.requeue or args.purge:
        verb = "requeued" if args.requeue else "purged"
        take = delivery.requeue_dead_letters if args.requeue else delivery.purge_dead_letters
        count = take(args.name)
        print(json.dumps({verb: count}) if args.json else f"{verb} {count} dead letter(s)")
        return EXIT_OK
    details = delivery.dead_letter_details(args.name)
    letters = [letter.data for letter in details]
    if args.json:
        try:
            print(json.dumps(letters))
        except (TypeError, ValueError) as error:
            raise CommandError(
                f"the dead letters of {args.name!r} are not JSON-serialisable ({error}); "
                "list them without --json",
                EXIT_ERROR,
            ) from None
    else:
        for letter in details:
            why = f"  # {letter.attempts} attempt(s): {letter.error}" if letter.error else ""
            say(f"{letter.data!r}{why}")
        if not details and not args.quiet:
            # On stderr: stdout stays one dead letter a line, for scripts.
            say(f"no dead letters for {args.name!r}", err=True)
    return EXIT_OK


def purge_pending(args: argparse.Namespace) -> int:
    """``purge NAME``: drop every pending payload of the signal (its dead letters stay)."""
    name = signal_name(args.name)
    warn_if_process_local(args)
    count = purge(name)
    if args.json:
        print(json.dumps({"purged": count}))
    elif not args.quiet:
        say(f"purged {count} pending payload(s) of {name!r}")
    return EXIT_OK


#: What ``cancel`` says of each result: what it knows, and what it cannot.
_CANCELLED = {
    CancelResult.CANCELLED: "cancelled (if still pending, no handler will get it)",
    CancelResult.DELIVERED: "already delivered (an eager send ran it): nothing to cancel",
}


def cancel_one(args: argparse.Namespace) -> int:
    """``cancel NAME ID``: cancel one pending payload by the id its send returned."""
    name = signal_name(args.name)
    warn_if_process_local(args)
    result = cancel(name, args.id)
    if args.json:
        print(json.dumps({"cancel": result.value}))
    elif not args.quiet:
        say(f"{_CANCELLED[result]}: {name!r} {args.id}")
    return EXIT_OK
