"""minimart: an event-driven order saga built from CloudEvents functions."""
