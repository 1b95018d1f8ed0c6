"""Operating a process: metrics (``metrics``, ``metrics_listener``), logging
(``logging``, ``log_output``), memory returned to the OS (``memory``) and the garbage
collector's tuning (``gc_tuning``).

May import: ``server.core``, ``actors`` (telemetry hooks), ``cluster`` (the types of what
it meters). The storage and the limits are its siblings: ``metrics`` reads them through
small protocols of its own. Everything above them may import it.
"""
