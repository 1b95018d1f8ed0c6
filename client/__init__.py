"""``cero``: the command-line client of Cero API.

It talks to the server only through the public wire contract (HTTP, SSE, the device flow);
it imports nothing from ``server`` or ``actors`` (tests/client/test_cli.py checks), so it works
against any deployment of the API, a cluster included.
"""

__version__ = "0.1.0"
