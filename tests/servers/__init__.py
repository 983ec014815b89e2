"""Local servers that stand in for the clouds, started once per test session.

Each module here is a pytest plugin (``tests/conftest.py`` loads them all).  A module that
provides backends for the shared conformance suite lists the names of its backend fixtures in
``BACKEND_FIXTURES``; each such fixture yields a fresh, empty :class:`vdir.backends.Backend`.
"""
