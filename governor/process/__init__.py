"""The process: start-up, serving, reload, workers and their supervisor, systemd."""
