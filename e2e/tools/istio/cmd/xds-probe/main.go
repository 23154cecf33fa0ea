// Command xds-probe connects to istiod as a proxy and prints, as JSON, what istiod sends it.
// As a sidecar of one cluster and network (the default): the endpoints of one Envoy cluster (EDS),
// what a sidecar in that cluster would be told to call. As a gateway (--node-type=router, with
// the gateway pod's labels): its listeners (LDS) and their routes (RDS).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"istio.io/istio/pilot/pkg/model"
	v3 "istio.io/istio/pilot/pkg/xds/v3"
	"istio.io/istio/pkg/adsc"

	"sks-istio-mesh/e2e/tools/istio/internal/cli"
)

type endpoint struct {
	Address string `json:"address"`
	Port    uint32 `json:"port"`
	Weight  uint32 `json:"weight"`
}

func main() {
	xds := flag.String("xds", "127.0.0.1:15010", "istiod's plaintext xDS address")
	clusterID := flag.String("cluster-id", "", "the proxy's cluster (CLUSTER_ID)")
	network := flag.String("network", "", "the proxy's network (NETWORK)")
	namespace := flag.String("namespace", "default", "the proxy's namespace")
	ip := flag.String("ip", "10.0.0.250", "the proxy's IP")
	edsCluster := flag.String("eds-cluster", "", "the Envoy cluster, e.g. outbound|3000||svc.ns.svc.cluster.local")
	timeout := flag.Duration("timeout", 30*time.Second, "how long to wait for the endpoints")
	nodeType := flag.String("node-type", string(model.SidecarProxy), "sidecar, or router for a gateway (prints LDS and RDS)")
	labels := flag.String("labels", "{}", "the proxy's pod labels, a JSON object (a gateway's Gateway selector matches them)")
	flag.Parse()
	cli.LogToStderr(tool)

	podLabels := map[string]any{}
	if err := json.Unmarshal([]byte(*labels), &podLabels); err != nil {
		fail(fmt.Errorf("--labels: %w", err))
	}
	fields := map[string]any{
		"CLUSTER_ID": *clusterID,
		"NETWORK":    *network,
		"NAMESPACE":  *namespace,
		"LABELS":     podLabels,
	}
	if model.NodeType(*nodeType) == model.Router {
		// The node ID adsc would build: type~ip~pod.namespace~namespace.svc.cluster.local.
		routerConfig(*xds, fmt.Sprintf("router~%s~xds-probe.%s~%s.svc.cluster.local", *ip, *namespace, *namespace),
			fields, *timeout)
		return
	}
	meta, err := structpb.NewStruct(fields)
	if err != nil {
		fail(err)
	}
	client, err := adsc.New(*xds, &adsc.ADSConfig{
		Config: adsc.Config{
			Namespace: *namespace,
			Workload:  "xds-probe",
			IP:        *ip,
			Meta:      meta,
			NodeType:  model.SidecarProxy,
		},
		InitialDiscoveryRequests: []*discovery.DiscoveryRequest{{TypeUrl: v3.ClusterType}},
	})
	if err != nil {
		fail(err)
	}
	defer client.Close()
	if err := client.Run(); err != nil {
		fail(err)
	}
	deadline := time.Now().Add(*timeout)
	for time.Now().Before(deadline) {
		if assignment, ok := client.GetEndpoints()[*edsCluster]; ok {
			found := []endpoint{}
			for _, locality := range assignment.Endpoints {
				for _, lb := range locality.LbEndpoints {
					address := lb.GetEndpoint().GetAddress().GetSocketAddress()
					found = append(found, endpoint{address.GetAddress(), address.GetPortValue(), lb.GetLoadBalancingWeight().GetValue()})
				}
			}
			out, _ := json.Marshal(found)
			fmt.Println(string(out))
			return
		}
		_, _ = client.Wait(time.Second, v3.EndpointType)
	}
	fail(fmt.Errorf("istiod sent no endpoints for %s within %s", *edsCluster, *timeout))
}

const tool = "xds-probe"

func fail(err error) {
	cli.Fail(tool, err)
}
