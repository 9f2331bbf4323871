"""Adapters: PostgreSQL, MongoDB, Redis and Kafka implementations of the handlers' ports."""
