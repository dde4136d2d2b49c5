"""Simulation of many virtual clients on one machine, reports and benchmarks."""
