"""Stand-in provider plugins for the real Pulumi engine: `pulumi-resource-exoscale` and
`pulumi-resource-tls` (see bin/), for the two providers the Go module proxy does not serve.

Both are built on the Python SDK's public provider API (`pulumi.provider.experimental`). They take
and return exactly the properties the `pulumiverse_exoscale` and `pulumi_tls` SDKs send and read,
and their check/diff follow the real providers' replace rules (the Terraform schemas they bridge,
cited next to each rule). TLS makes real keys and certificates; Exoscale is a client of the fake
cloud API that the test session serves (e2e/fake_exoscale.py, `EXOSCALE_API_ENDPOINT`).
"""
