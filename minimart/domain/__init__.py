"""Business rules of the saga: plain data and decisions, no I/O."""
