"""The core's control API: HTTP + JSON on a Unix socket (loopback TCP in sim mode).

server.py   the HTTP server: routing, body checks, errors, the hop onto the reactor
adapter.py  what each endpoint does with the running core (status, config, diag, sim)
spec.py     the OpenAPI 3.0 document (kept in the repo as openapi.json) and its schemas
schema.py   the small JSON-schema checker the server validates request bodies with
logbuffer.py  the bounded in-memory log the /logs endpoint pages through
client.py   ApiClient, what the web, console and agent processes talk through

Assumes the web, console and agent processes reach the core only through this API.
"""
