"""The core's control API: HTTP + JSON on a Unix socket (loopback TCP in sim mode), the one
way the web, console and agent processes reach the core. server.py routes by spec.py's
OpenAPI document; adapter.py maps each endpoint to the core (status.py, diag); stream.py
is GET /events; client.py is what the other processes use."""
