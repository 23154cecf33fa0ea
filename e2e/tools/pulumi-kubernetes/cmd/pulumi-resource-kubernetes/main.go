// Command pulumi-resource-kubernetes is the real pulumi-kubernetes provider, as upstream's
// cmd/pulumi-resource-kubernetes/main.go serves it. Upstream's main embeds schema-embed.json and
// terraform-mapping-embed.json, which its go:generate step writes and the module zip lacks, so
// this copy of the six-line main embeds the same two files, written by build.sh from the
// module's own schema.json and terraform-mapping.json (the version set, as upstream's generate.go
// does).
package main

import (
	_ "embed"

	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"
	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version"
)

//go:embed schema-embed.json
var pulumiSchema []byte

//go:embed terraform-mapping-embed.json
var terraformMapping []byte

func main() {
	provider.Serve("kubernetes", version.Version, pulumiSchema, terraformMapping)
}
