"""Deployment: keys, coordinator and organisation processes, operator files."""
