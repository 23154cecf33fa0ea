"""Runs the program under Pulumi mocks; shared by the tests (tests/) and the benchmark (bench/)."""
