"""The foundation every layer stands on: settings, domain errors, limits, metrics, logs,
tracing, the slow-request timer, and the request and answer schemas."""
