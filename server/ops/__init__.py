"""Operating a process: metrics (``metrics``, ``metrics_listener``), logging
(``logging``, ``log_output``), memory returned to the OS (``memory``) and the garbage
collector's tuning (``gc_tuning``).

May import: ``server.core``, ``actors`` (telemetry hooks). Everything may import it.
"""
