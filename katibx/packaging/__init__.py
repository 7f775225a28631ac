"""Fairing-style packaging: local code into a container image without Docker (``katibx build``).

A source (a file or a folder) becomes one reproducible layer appended to a base image (``scratch`` for none),
pushed to a registry speaking the distribution API, or written as an OCI layout folder; the manifest goes last, so
a build cut short never looks finished. See :func:`katibx.packaging.build.build_image`.
"""
