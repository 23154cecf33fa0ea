"""Benchmark of the program under mocks: resources, evaluation time, memory and deploy critical path."""
