"""What happened, for operators: request events, Prometheus metrics, the access log, webhooks."""
