"""Flask guestbook example; the WSGI application is ``examples.flask_app.app:app``."""
