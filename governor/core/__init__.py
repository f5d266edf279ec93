"""The pure core: periods, tenants, the decision, the meter, the ledger, alerts.

Nothing here imports asyncio, sockets or any I/O library, and nothing awaits: values in,
decisions out, the clock passed in (tests/unit/test_layout.py keeps it so).
"""
