"""The ops console: inspect and repair any running minimart (the local stack or a cluster).

Record and replay CloudEvents, list and re-drive dead letters, check the books, print an
order's trace. It talks to Kafka and the stores through their addresses in ``Settings`` and
never to the local runtime's process management.
"""
