"""TLS termination: certificates (read, checked, picked by SNI) and the channel that runs
TLS on an accepted socket while counting the bytes that cross it."""
