"""The web application's plumbing: the app factory, middleware, problem responses, auth,
rate limits, the OpenAPI document and the HTML pages. The endpoints are in
:mod:`server.api`.
"""
