//go:build tools

// Package tools pins the helm command that make e2e builds.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
