"""Drop-in replacements for other FastCGI libraries' Python APIs, served by fcgibridge.

- :mod:`fcgibridge.compat.flup`: flup's ``WSGIServer`` (``flup.server.fcgi``) and
  ``FCGIApp`` (``flup.client.fcgi_app``); a ``.fcgi`` script switches by changing its
  import line (docs/migrating-from-flup.md).

Nothing in the package imports this one: it sits on top, beside the command line.
"""
