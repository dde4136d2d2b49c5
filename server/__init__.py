"""The server side: what the coordinator runs."""
