"""Policy server: run a policy in another process, venv, Python version or machine (websocket + msgpack).

- :mod:`harness.server.protocol` — messages, array encoding, limits (protocol version 1)
- :mod:`harness.server.server`   — :class:`PolicyServer` (sessions, batching) and ``vla-bench serve``
- :mod:`harness.server.client`   — :class:`RemotePolicy` (method ``remote``)

See docs/scaleout.md for the protocol and the security notes.
"""
