"""Traces (OpenTelemetry) and metrics (Prometheus) of minimart's processes.

``tracing.configure(settings)`` is the one place the OpenTelemetry SDK is set up; it runs
lazily (when a process builds its container, or in the dispatcher's ``main``), never at import.
"""
