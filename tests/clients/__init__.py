"""Client adapters for the client-compatibility tests (tests/integration/test_clients.py)."""
