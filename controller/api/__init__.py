"""The HTTP edge: the ASGI app and its guards (`app`), the routes, request and response shapes."""
