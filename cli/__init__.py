"""The ``vdir`` command-line front end (see :mod:`cli.main`)."""
