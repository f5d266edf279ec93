"""The handler of every request: resolve the tenant, decide, then a notice or a forward."""
