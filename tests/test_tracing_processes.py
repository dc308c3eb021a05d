"""OpenTelemetry across processes: gaesignals works without OpenTelemetry installed, an installed
API nobody imported costs no import, and one trace runs from a sender process to a deliverer
process (whose processes set their own providers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gaesignals.testing.servers import MemcachedServer

from . import tracing_workers as workers
from .harness import Run
from .tracing_support import MODES


def test_gaesignals_works_without_opentelemetry_installed(tmp_path: Path) -> None:
    """Where opentelemetry cannot be imported, the library imports, sends and delivers as
    usual and :mod:`gaesignals.tracing` reports itself unavailable."""
    script = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import gaesignals\n"
        "from gaesignals import tracing\n"
        "assert not tracing.AVAILABLE and not tracing.active()\n"
        "got = []\n"
        "gaesignals.send('x', 1)\n"
        "assert gaesignals.deliver({'x': got.append}) == 1 and got == [1]\n"
        "tracing.count(tracing.SENT, 'x')\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr


def test_an_installed_api_nobody_imported_costs_no_import(tmp_path: Path) -> None:
    """``import gaesignals`` and its sends import nothing of opentelemetry until the
    application imports the API itself; a provider it then sets is noticed at the next send."""
    script = (
        "import sys\n"
        "import gaesignals\n"
        "from gaesignals import tracing\n"
        "gaesignals.configure(store='memory://')\n"
        "gaesignals.send('x', 1)\n"
        "assert tracing.AVAILABLE and not tracing.active()\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n"
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "trace.set_tracer_provider(TracerProvider())\n"
        "with trace.get_tracer('app').start_as_current_span('request'):\n"
        "    gaesignals.send('x', 2)\n"
        "assert tracing.active()\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr


@pytest.mark.slow
@MODES
def test_one_trace_runs_from_a_sender_process_to_a_deliverer_process(
    gaesignals_memcached: MemcachedServer, tmp_path: Path, reliable: bool
) -> None:
    """A sender process (its global tracer provider set after a first, untraced send) and a
    deliverer process on a real memcached, each exporting its spans: the deliverer's CONSUMER
    span for the traced payload is in the sender's trace, child of its PRODUCER span, and the
    untraced payload, sent before any provider, carried no context."""
    gaesignals_memcached.flush()
    url = gaesignals_memcached.url
    for name, target, args in [
        ("sender", workers.sender, ()),
        ("deliverer", workers.deliverer, (reliable,)),
    ]:
        run = Run(tmp_path, 60.0)
        proc = run.process(target, name, url, *args)
        with run.running():
            run.join([proc])
    sent = json.loads((tmp_path / "sender.spans.json").read_text())
    done = json.loads((tmp_path / "deliverer.spans.json").read_text())
    (producer,) = [span for span in sent if span["name"] == f"send {workers.NAME}"]
    consumers = [span for span in done if span["name"] == f"process {workers.NAME}"]
    by_payload = {span["payload"]: span for span in consumers}
    assert sorted(by_payload) == ["traced", "untraced"]
    traced, untraced = by_payload["traced"], by_payload["untraced"]
    assert producer["kind"] == "PRODUCER" and traced["kind"] == "CONSUMER"
    assert traced["trace_id"] == producer["trace_id"]
    assert traced["parent_id"] == producer["span_id"]
    assert (
        traced["attributes"]["messaging.message.id"]
        == producer["attributes"]["messaging.message.id"]
    )
    (delivery,) = [span for span in done if span["name"] == "deliver"]
    assert traced["links"] == [delivery["span_id"]]
    assert untraced["trace_id"] == delivery["trace_id"] != producer["trace_id"]
    assert untraced["parent_id"] == delivery["span_id"]
