"""Worker-backend plugins (``local``, ``ray``, ``kubernetes``), one module each, registered as entry points.

The contract they implement lives in the core (:class:`katibx.Backend`); nothing here is imported until an
experiment runs on the backend.
"""
