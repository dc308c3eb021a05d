"""gunicorn settings for running the example locally (``scripts/run_example.sh``)."""

import logging

accesslog = "-"
# No control socket in ~/.gunicorn: two runs at once would fight over it (older gunicorn
# versions do not know the setting and ignore it).
control_socket_disable = True
# Show the signal handlers' log lines (they log at INFO) next to gunicorn's own.
logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(process)d] %(name)s: %(message)s")


def when_ready(server):
    """Print the address once the socket listens, so a person (or a test) knows where to go."""
    for listener in server.LISTENERS:
        print(f"gaesignals example: serving on {listener}/", flush=True)
