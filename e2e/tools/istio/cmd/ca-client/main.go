// Command ca-client asks istiod's CA for a workload certificate the way an istio-agent does: it
// sends a CSR for a service account's SPIFFE identity over istiod's secure gRPC port with Istio's
// own client (security/pkg/nodeagent/caclient/providers/citadel), authenticated by a Kubernetes
// TokenRequest token, and prints the returned PEM chain (leaf first, then what istiod appends).
package main

import (
	"flag"
	"fmt"
	"strings"
	"time"

	"istio.io/istio/pkg/security"
	"istio.io/istio/security/pkg/credentialfetcher/plugin"
	"istio.io/istio/security/pkg/nodeagent/caclient/providers/citadel"
	pkiutil "istio.io/istio/security/pkg/pki/util"

	"sks-istio-mesh/e2e/tools/istio/internal/cli"
)

func main() {
	address := flag.String("ca", "127.0.0.1:15012", "istiod's secure gRPC address (--secureGRPCAddr)")
	serverName := flag.String("san", "istiod.istio-system.svc", "the name istiod's serving certificate must carry")
	rootCert := flag.String("root-cert", "", "PEM file of the trust bundle the connection to istiod is verified against")
	tokenFile := flag.String("token", "", "file holding a TokenRequest token with audience istio-ca")
	clusterID := flag.String("cluster-id", "", "the workload's cluster (sent as ClusterID, like the agent)")
	identity := flag.String("identity", "", "the SPIFFE identity to request, spiffe://<trust domain>/ns/<ns>/sa/<sa>")
	ttl := flag.Duration("ttl", time.Hour, "the certificate validity to request")
	flag.Parse()
	cli.LogToStderr(tool)
	if *rootCert == "" || *tokenFile == "" || *identity == "" {
		fail(fmt.Errorf("--root-cert, --token and --identity are required"))
	}

	csr, _, err := pkiutil.GenCSR(pkiutil.CertOptions{Host: *identity, ECSigAlg: pkiutil.EcdsaSigAlg})
	if err != nil {
		fail(err)
	}
	client, err := citadel.NewCitadelClient(&security.Options{
		CAEndpoint:    *address,
		CAEndpointSAN: *serverName,
		ClusterID:     *clusterID,
		CredFetcher:   plugin.CreateTokenPlugin(*tokenFile),
	}, &citadel.TLSOptions{RootCert: *rootCert})
	if err != nil {
		fail(err)
	}
	defer client.Close()
	chain, err := client.CSRSign(csr, int64(ttl.Seconds()))
	if err != nil {
		fail(err)
	}
	for _, pem := range chain {
		fmt.Println(strings.TrimSpace(pem))
	}
}

const tool = "ca-client"

func fail(err error) {
	cli.Fail(tool, err)
}
