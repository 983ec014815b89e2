"""FAKE servers for clouds that have no emulator (Box, GitHub): each implements only the API
subset vdir calls, written from the public API docs.  They are test doubles, not the services."""
