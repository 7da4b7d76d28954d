"""Integration tests: a real nats-server child and real libSQL files."""
