"""The admin listener: health, readiness, /metrics, the JSON API and the status page."""
