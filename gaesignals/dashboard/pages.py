"""The dashboard's HTML, server-rendered: every value from the store or a request goes through
:func:`html.escape`, and no page holds inline script or style (the CSP forbids both).

Links are built on ``base``, the mount point (``SCRIPT_NAME``), so the pages work under any
prefix a host app mounts them at.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from html import escape
from urllib.parse import urlencode

from ..delivery import DeadLetter
from ..inspection import REPORTED, Overview, SignalReport

#: The longest payload preview shown, in characters.
PREVIEW_CHARS = 300
#: The most dead letters one page lists.
MAX_LETTERS = 100


def url(base: str, path: str, **query: str | int) -> str:
    """A URL path under ``base``; a name holding a lone surrogate is percent-encoded as such,
    which the dashboard decodes back (see :func:`~.wsgi.parse_fields`)."""
    return f"{base}{path}" + (f"?{urlencode(query, errors='surrogatepass')}" if query else "")


def link(base: str, path: str, **query: str | int) -> str:
    """An escaped URL under ``base`` (for an attribute)."""
    return escape(url(base, path, **query), quote=True)


def encode(html: str) -> bytes:
    """A page's bytes: a lone surrogate (a signal named from JSON can hold one) is shown as
    its escape, ``\\udc80``, instead of failing the page."""
    return html.encode("utf-8", "backslashreplace")


def layout(base: str, title: str, body: str, *, nav: bool = True, csrf: str = "") -> str:
    """A whole page around ``body``; ``nav`` adds the search box, and ``csrf`` (a login's
    session only: there is nothing to log out of behind the host's auth) the logout button."""
    header = f'<a class="brand" href="{link(base, "/")}">gaesignals</a>'
    if nav:
        header += (
            f'<form class="search" method="get" action="{link(base, "/")}" role="search">'
            '<input type="search" name="q" placeholder="signal name" aria-label="signal name">'
            '<button type="submit">Find</button></form>'
        )
    if nav and csrf:
        header += (
            f'<form method="post" action="{link(base, "/logout")}">'
            f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
            '<button class="quiet" type="submit">Log out</button></form>'
        )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · gaesignals</title>"
        '<link rel="icon" href="data:,">'  # no /favicon.ico request outside the mount point
        f'<link rel="stylesheet" href="{link(base, "/static/dashboard.css")}">'
        f'<script src="{link(base, "/static/dashboard.js")}" defer></script>'
        f"</head><body><header>{header}</header><main>{body}</main></body></html>\n"
    )


def store_line(found: Overview, kind: str) -> str:
    if not found.reachable:
        return (
            '<p class="alert" role="alert" id="store">The store is unavailable: '
            f"{escape(found.error or 'no answer')}. The numbers below are unknown.</p>"
        )
    return (
        f'<p class="ok" id="store">Store {escape(kind)} is up '
        f"({found.latency_ms} ms for the first read).</p>"
    )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _when(unix: float | None) -> str:
    if unix is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))


def _row(base: str, name: str, report: SignalReport | None) -> str:
    target = link(base, "/signal", name=name)
    cells = [f'<th scope="row"><a href="{target}">{escape(name)}</a></th>']
    if report is None:
        cells += ['<td class="unknown">?</td>'] * (9 + len(REPORTED))
        return f"<tr>{''.join(cells)}</tr>"
    backlog = report.pending
    due = backlog.count - backlog.waiting
    values = [
        str(backlog.count),
        str(backlog.bytes),
        _age(backlog.oldest_age),
        str(due),
        str(backlog.waiting),
        _when(backlog.next_due),
        *(str(report.counters[c]) for c in REPORTED),
        report.lock,
        str(report.dead_letters),
        str(backlog.debounced),
    ]
    cells += [f'<td data-col="{i}">{escape(v)}</td>' for i, v in enumerate(values)]
    return f'<tr data-signal="{escape(name)}">{"".join(cells)}</tr>'


def _head() -> str:
    names = ["signal", "pending", "bytes", "oldest", "due", "delayed", "next due", *REPORTED]
    names += ["lock", "dead letters", "debounced"]
    return "".join(f'<th scope="col">{escape(n.replace("_", " "))}</th>' for n in names)


def chart(api: str) -> str:
    """Where the static script draws the rates it samples from ``api`` while the page is open."""
    return (
        f'<figure class="chart" id="chart" data-api="{api}">'
        "<figcaption>Payloads per second over the last minutes, sampled while this page is "
        'open: <span class="sent">sent</span>, <span class="delivered">delivered</span>, '
        '<span class="failed">failed</span>.</figcaption></figure>'
    )


def signal_list(
    base: str,
    found: Overview,
    kind: str,
    names: Sequence[str],
    *,
    page: int,
    pages: int,
    total: int,
    query: str,
) -> str:
    """The list page: the store's state, one row per signal on this page, and the pager."""
    rows = "".join(_row(base, name, found.signals.get(name)) for name in names)
    if not names:
        rows = f'<tr><td colspan="{10 + len(REPORTED)}">No signals to show.</td></tr>'
    where = {"q": query} if query else {}
    pager = [f"<span>page {page} of {pages}, {total} signal(s)</span>"]
    if page > 1:
        back = link(base, "/", page=page - 1, **where)
        pager.insert(0, f'<a rel="prev" href="{back}">&lsaquo; prev</a>')
    if page < pages:
        on = link(base, "/", page=page + 1, **where)
        pager.append(f'<a rel="next" href="{on}">next &rsaquo;</a>')
    api = link(base, "/api/signals", page=page, **where)
    return (
        f"<h1>Signals</h1>{store_line(found, kind)}{chart(api)}"
        f'<div class="scroll"><table id="signals"><thead><tr>{_head()}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
        f'<nav class="pager">{" ".join(pager)}</nav>'
    )


def _action(base: str, name: str, verb: str, label: str, csrf: str, danger: bool = False) -> str:
    """A button posting ``verb``; the name rides in the action's URL, which carries any name
    exactly (a form field could not hold a lone surrogate)."""
    cls = ' class="danger"' if danger else ""
    return (
        f'<form method="post" action="{link(base, "/signal/" + verb, name=name)}">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<button type="submit" name="action" value="{verb}"{cls}>{label}</button></form>'
    )


def _letters(letters: Sequence[DeadLetter]) -> str:
    if not letters:
        return "<p>No dead letters.</p>"
    rows = []
    for letter in letters[:MAX_LETTERS]:
        preview = repr(letter.data)
        if len(preview) > PREVIEW_CHARS:
            preview = preview[:PREVIEW_CHARS] + "…"
        rows.append(
            f"<tr><td>{letter.attempts}</td><td>{escape(_when(letter.sent_at))}</td>"
            f"<td>{escape(letter.error or '-')}</td><td><code>{escape(preview)}</code></td></tr>"
        )
    more = len(letters) - MAX_LETTERS
    tail = f"<p>…and {more} more.</p>" if more > 0 else ""
    return (
        '<div class="scroll"><table id="dead-letters"><thead><tr><th scope="col">attempts</th>'
        '<th scope="col">sent</th><th scope="col">last error</th><th scope="col">payload</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>{tail}"
    )


def signal_detail(
    base: str,
    name: str,
    found: Overview,
    kind: str,
    letters: Sequence[DeadLetter] | None,
    *,
    csrf: str,
    notice: str = "",
    known: bool = True,
) -> str:
    """One signal: its numbers, its dead letters and the actions."""
    parts = [f"<h1>{escape(name)}</h1>"]
    if notice:
        parts.append(f'<p class="notice" role="status">{escape(notice)}</p>')
    if not known:
        parts.append("<p>This name is neither registered nor declared in this process.</p>")
    parts.append(store_line(found, kind))
    parts.append(chart(link(base, "/api/signal", name=name)))
    parts.append(
        f'<div class="scroll"><table id="signals"><thead><tr>{_head()}</tr></thead>'
        f"<tbody>{_row(base, name, found.signals.get(name))}</tbody></table></div>"
    )
    parts.append(
        '<div class="actions">'
        + _action(base, name, "deliver", "Deliver now", csrf)
        + _action(base, name, "requeue", "Requeue dead letters", csrf)
        + _action(base, name, "purge", "Purge dead letters", csrf, danger=True)
        + _action(base, name, "purge-pending", "Purge pending payloads", csrf, danger=True)
        + "</div>"
    )
    parts.append("<h2>Dead letters</h2>")
    parts.append(_letters(letters) if letters is not None else "<p>Unknown: the store is down.</p>")
    return "".join(parts)


def login(base: str, csrf: str, *, failed: bool = False) -> str:
    wrong = '<p class="alert" role="alert">That is not the token.</p>' if failed else ""
    return (
        f"<h1>Log in</h1>{wrong}"
        f'<form class="login" method="post" action="{link(base, "/login")}">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        '<label>Dashboard token <input type="password" name="token" required '
        'autocomplete="current-password"></label><button type="submit">Log in</button></form>'
    )


def message(title: str, text: str) -> str:
    return f"<h1>{escape(title)}</h1><p>{escape(text)}</p>"
