"""The performance benchmark of the local stack (``make bench``; not part of the test run)."""
