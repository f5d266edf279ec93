"""``make bench-scale``: governor at 1 / 10,000 / 100,000 configured tenants, nginx's ``map``
beside it (see ``__main__``)."""
