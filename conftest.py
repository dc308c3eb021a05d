"""Runs the ```python blocks of README.md and docs/*.md as tests (sybil), so that the examples
readers copy cannot rot.

The blocks of one page run in order in one namespace, as a reader would type them, on fresh
settings: no ``GAESIGNALS_*`` variable, the embedded store, an empty receiver registry; the
settings are put back when the page is done, as ``tests/conftest.py`` does for each test. A
block that cannot run on its own (settings for a framework, a deployment) is preceded by a
``skip: next`` comment, or fenced as another language.
"""

from __future__ import annotations

import os
from typing import Any

import opentelemetry.metrics._internal as otel_metrics
from opentelemetry import trace
from opentelemetry.util._once import Once
from sybil import Sybil
from sybil.parsers.myst import PythonCodeBlockParser, SkipParser

import gaesignals
from gaesignals import config, tracing


def _fresh(namespace: dict[str, Any]) -> None:
    """Start a page on the defaults, keeping the environment it changes to put back."""
    saved = {name: value for name, value in os.environ.items() if name.startswith("GAESIGNALS_")}
    for name in saved:
        del os.environ[name]
    namespace["__saved_environ__"] = saved
    namespace["__name__"] = "__main__"  # as a script has it: Flask(__name__) finds its root
    config.reset()
    gaesignals.registry.clear()
    config.configure(store="memory://")


def _forget_opentelemetry() -> None:
    """Unset the global providers a page set (docs/observability.md sets a tracer provider),
    as OpenTelemetry's own test utilities do (``opentelemetry.test.globals_test``): the API
    lets them be set only once per process, and a provider left behind would make every later
    test's sends carry a trace context."""
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    trace._PROXY_TRACER_PROVIDER = trace.ProxyTracerProvider()
    otel_metrics._METER_PROVIDER_SET_ONCE = Once()
    otel_metrics._METER_PROVIDER = None
    otel_metrics._PROXY_METER_PROVIDER = otel_metrics._ProxyMeterProvider()
    tracing.use()  # gaesignals looks at the (now empty) globals anew


def _restore(namespace: dict[str, Any]) -> None:
    """Forget what the page configured and registered, and put its environment back."""
    _forget_opentelemetry()
    config.reset()
    gaesignals.registry.clear()
    for name in [name for name in os.environ if name.startswith("GAESIGNALS_")]:
        del os.environ[name]
    os.environ.update(namespace.get("__saved_environ__", {}))


pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(), SkipParser()],
    patterns=["README.md", "docs/*.md"],
    excludes=["docs/_build/*"],
    setup=_fresh,
    teardown=_restore,
).pytest()
