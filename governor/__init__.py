"""governor: a streaming reverse proxy that meters each tenant's daily data transfer."""
