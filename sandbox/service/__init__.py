"""`sandbox serve`: the execution service (issue 16; docs/service.md).

Importing this package needs the `service` extra (fastapi, uvicorn, ...);
the rest of sandbox never imports it.
"""
