//go:build tools

// Package tools pins istiod (pilot-discovery) and istioctl (its analyzer) for make e2e. Only this master commit of
// istio.io/istio is served by the module proxy here; it is newer than the pinned 1.30.3 charts.
package tools

import (
	_ "istio.io/istio/istioctl/cmd/istioctl"
	_ "istio.io/istio/pilot/cmd/pilot-discovery"
)
