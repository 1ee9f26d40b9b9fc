"""Serving: the connection layer (one asyncio protocol per web-server connection) and the
app adapters behind it (WSGI in threads, ASGI on the loop, with lifespan).

Nothing here binds sockets, forks or handles signals: that is :mod:`fcgibridge.process`.
"""
