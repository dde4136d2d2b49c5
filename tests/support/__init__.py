"""Helpers shared by the tests: tiny random models built from configs, never downloaded."""
