"""Aggregation strategies, one a file, selected by name through the registry."""
