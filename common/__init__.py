"""Shared building blocks of privatune: configuration, models, adapters, data, privacy."""
