#!/usr/bin/env bash
# Builds the e2e tools from the Go modules pinned beside this script into e2e/.bin, or reuses
# them when their pins have not changed. Go's module and build caches make a rebuild quick.
set -euo pipefail
tools=$(cd "$(dirname "$0")" && pwd)
bin="$tools/../.bin"
mkdir -p "$bin"

command -v go >/dev/null || { echo "make e2e needs Go 1.26 or newer on PATH: https://go.dev/dl/" >&2; exit 1; }
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
if [ "${go_minor:-0}" -lt 26 ]; then
  echo "make e2e needs Go 1.26 or newer (the KWOK and Helm modules say go 1.26.0); found $(go env GOVERSION)" >&2
  exit 1
fi

k8s_version=$(sed -nE 's/^require k8s.io\/kubernetes (v[0-9.]+)$/\1/p' "$tools/kubernetes/go.mod")
k8s_minor=$(echo "$k8s_version" | cut -d. -f2)
# Without these the API server reports v0.0.0-master, which Helm's kubeVersion checks reject.
k8s_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version \
-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$k8s_minor"

# module folder, binaries it yields, ldflags, packages
build() {
  local module=$1 outputs=$2 ldflags=$3; shift 3
  local stamp_file="$bin/.$module.stamp" stamp
  stamp=$({ cat "$tools/$module/go.mod" "$tools/$module/go.sum"
             find "$tools/$module" -name '*.go' | sort | xargs cat
             echo "$ldflags"; } | sha256sum | cut -c1-16)
  local missing=0
  for output in $outputs; do [ -x "$bin/$output" ] || missing=1; done
  if [ "$missing" = 0 ] && [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ]; then
    echo "e2e tools: $module up to date ($outputs)"
    return
  fi
  local started=$SECONDS
  # One binary is named explicitly (etcd's package path ends in /v3); several go into the folder.
  local target="$bin/"
  [ "$(echo "$outputs" | wc -w)" = 1 ] && target="$bin/$outputs"
  (cd "$tools/$module" && go build -trimpath -ldflags "$ldflags" -o "$target" "$@")
  echo "$stamp" > "$stamp_file"
  echo "e2e tools: built $module ($outputs) in $((SECONDS - started)) s"
}

started=$SECONDS
# The real Pulumi engine and pulumi-kubernetes provider: the e2e's verdicts come from them.
pulumi_version=$(sed -nE 's/^require github.com\/pulumi\/pulumi\/pkg\/v3 (v[0-9.]+)$/\1/p' "$tools/pulumi/go.mod")
build pulumi pulumi "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$pulumi_version" \
  github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
# The provider's module zip lacks the two files its main embeds (upstream's go:generate writes
# them); write them from the module's schema.json and terraform-mapping.json, as generate.go does.
k8s_provider_version=4.25.0  # the tag of the one pseudo-version the module proxy serves (go.mod)
k8s_provider_main="$tools/pulumi-kubernetes/cmd/pulumi-resource-kubernetes"
k8s_provider_dir=$(cd "$tools/pulumi-kubernetes" && go mod download github.com/pulumi/pulumi-kubernetes/provider/v4 \
  && go list -m -f '{{.Dir}}' github.com/pulumi/pulumi-kubernetes/provider/v4)
python3 - "$k8s_provider_dir/cmd/pulumi-resource-kubernetes" "$k8s_provider_main" "$k8s_provider_version" <<'PY'
import json, sys
source, target, version = sys.argv[1:]
schema = json.load(open(f"{source}/schema.json"))
schema["version"] = version
json.dump(schema, open(f"{target}/schema-embed.json", "w"), separators=(",", ":"))
mapping = json.load(open(f"{source}/terraform-mapping.json"))
json.dump(mapping, open(f"{target}/terraform-mapping-embed.json", "w"), separators=(",", ":"))
PY
build pulumi-kubernetes pulumi-resource-kubernetes \
  "-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$k8s_provider_version" \
  ./cmd/pulumi-resource-kubernetes
build kubernetes "kube-apiserver kube-controller-manager kube-scheduler" "$k8s_ldflags" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler
build etcd etcd "-s -w" go.etcd.io/etcd/server/v3
# Helm reports its version from the module's build info only with -X (it prints v3.x otherwise).
helm_version=$(sed -nE 's/^require helm.sh\/helm\/v3 (v[0-9.]+)$/\1/p' "$tools/helm/go.mod")
build helm helm "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version" helm.sh/helm/v3/cmd/helm
build kwok kwok "-s -w" sigs.k8s.io/kwok/cmd/kwok
build istio "pilot-discovery istioctl xds-probe" "-s -w" istio.io/istio/pilot/cmd/pilot-discovery \
  istio.io/istio/istioctl/cmd/istioctl ./cmd/xds-probe
echo "e2e tools: ready in $((SECONDS - started)) s"

