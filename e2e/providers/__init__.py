"""Stand-in provider plugins for the real Pulumi engine: `pulumi-resource-exoscale` and
`pulumi-resource-tls` (see bin/), for the two providers the Go module proxy does not serve.

Both are built on the Python SDK's public provider API (`pulumi.provider.experimental`). They take
and return exactly the properties the `pulumiverse_exoscale` and `pulumi_tls` SDKs send and read,
and their check/diff follow the real providers' replace rules (the Terraform schemas they bridge,
cited next to each rule). TLS makes real keys and certificates; Exoscale is a client of the fake
cloud API that the test session serves (e2e/fake_exoscale.py).

What a harness sets for the engine's commands:
- `PATH`: e2e/providers/bin first (the engine then says "using pulumi-resource-tls from $PATH"),
  and `PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true`;
- `SKS_E2E_PYTHON`: the Python that runs the plugins (one with pulumi and cryptography, e.g.
  `sys.executable`); the scripts put the project root on PYTHONPATH themselves;
- `EXOSCALE_API_ENDPOINT`: the URL `FakeExoscale.serve()` returns (loopback only); only create,
  update, delete and refresh call it, so a preview works without it.
"""
