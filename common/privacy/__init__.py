"""Differential-privacy accounting shared by clients and the server."""
