"""Reading, validating, formatting and partitioning client data."""
