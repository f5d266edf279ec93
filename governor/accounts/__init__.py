"""The live side of the accounts: the config snapshot, the flusher to the store, the spool."""
