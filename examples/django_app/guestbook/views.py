"""Two views: the page (entries, published or still pending) and the form's post."""

import django
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.middleware.csrf import get_token
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from gaesignals.browser import csrf_token
from gaesignals.browser.frameworks import django as signals_django

from .models import Entry
from .signals import entry_signed

if django.VERSION >= (6, 0):  # django.tasks: the slow work is a task
    from .tasks import publish_entry
else:  # Django 5: the AsyncSignal carries it
    publish_entry = None


#: The page's script: it calls ``guestbook.count`` and shows the answer sent to its window.
LIVE = mark_safe(
    "<p><button id=count>How many published, live?</button> <output id=counted></output></p>"
    '<script type=module>import { call, connect } from "/signals/client.js";'
    'connect("guestbook.counted", (data) => {'
    ' document.getElementById("counted").textContent = `${data.published} published`; });'
    'document.getElementById("count").onclick = () => call("guestbook.count", {});</script>'
)


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    rows = format_html_join(
        "",
        "<li><b>{}</b>: {} <i>{}</i></li>",
        (
            (
                e.name,
                e.text,
                f"published, {e.words} word(s)" if e.published_at else "pending",
            )
            for e in Entry.objects.all()[:50]
        ),
    )
    return HttpResponse(
        format_html(
            '<!doctype html><title>Guestbook</title><meta name="gaesignals-csrf" content="{}">'
            "<h1>Guestbook</h1>"
            '<form method=post action="/sign"><input type=hidden name=csrfmiddlewaretoken '
            'value="{}"><input name=name placeholder=name required maxlength=50> '
            "<input name=text placeholder=message required maxlength=200> "
            "<button>Sign</button></form><ul>{}</ul>{}",
            csrf_token(signals_django.visitor(request)),
            get_token(request),
            rows,
            LIVE,
        )
    )


@require_POST
def sign(request: HttpRequest) -> HttpResponse:
    name = request.POST.get("name", "").strip()[:50]
    text = request.POST.get("text", "").strip()[:200]
    if name and text:
        entry = Entry.objects.create(name=name, text=text)
        # Both return at once; the entry is published later, by whatever delivers.
        if publish_entry is not None:
            publish_entry.enqueue(entry.pk)
        else:
            entry_signed.send(sender=Entry, entry=entry)
    return HttpResponseRedirect("/")
