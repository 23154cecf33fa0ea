# The policy pack's entry point starts a gRPC server and never returns: pytest must not import it
# (not even with --doctest-modules). Its policies are tested in tests/test_policy.py.
collect_ignore = ["__main__.py"]
