package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	v3 "istio.io/istio/pilot/pkg/xds/v3"
	// Registers every Envoy extension type istiod may put in a typed_config, so they print as JSON.
	_ "istio.io/istio/pkg/config/xds"
)

// routerConfig asks istiod for what it would send a gateway (node type "router") with the given
// node metadata, and prints {"listeners": [...], "routes": [...]} as Envoy's JSON: LDS, then RDS
// for every route configuration the listeners' HTTP connection managers name.
func routerConfig(xds, nodeID string, meta map[string]any, timeout time.Duration) {
	// As adsc does: without a version istiod would treat the proxy as an old one.
	meta["ISTIO_VERSION"] = "65536.65536.65536"
	metadata, err := structpb.NewStruct(meta)
	if err != nil {
		fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := grpc.NewClient(xds, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail(err)
	}
	defer conn.Close()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		fail(err)
	}
	node := &core.Node{Id: nodeID, Metadata: metadata}
	receive := func(typeURL string, names []string) []*anypb.Any {
		if err := stream.Send(&discovery.DiscoveryRequest{Node: node, TypeUrl: typeURL, ResourceNames: names}); err != nil {
			fail(err)
		}
		for {
			response, err := stream.Recv()
			if err != nil {
				fail(fmt.Errorf("waiting for %s: %w", typeURL, err))
			}
			if response.TypeUrl == typeURL {
				return response.Resources
			}
		}
	}
	out := map[string][]json.RawMessage{"listeners": {}, "routes": {}}
	routeNames := []string{}
	for _, resource := range receive(v3.ListenerType, nil) {
		l := &listener.Listener{}
		if err := resource.UnmarshalTo(l); err != nil {
			fail(err)
		}
		out["listeners"] = append(out["listeners"], marshal(l))
		for _, chain := range l.FilterChains {
			for _, filter := range chain.Filters {
				manager := &hcm.HttpConnectionManager{}
				if filter.GetTypedConfig().MessageIs(manager) && filter.GetTypedConfig().UnmarshalTo(manager) == nil &&
					manager.GetRds() != nil {
					routeNames = append(routeNames, manager.GetRds().RouteConfigName)
				}
			}
		}
	}
	if len(routeNames) > 0 {
		sort.Strings(routeNames)
		for _, resource := range receive(v3.RouteType, routeNames) {
			out["routes"] = append(out["routes"], marshalAny(resource))
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail(err)
	}
}

func marshal(l *listener.Listener) json.RawMessage {
	data, err := protojson.Marshal(l)
	if err != nil {
		fail(err)
	}
	return data
}

func marshalAny(resource *anypb.Any) json.RawMessage {
	message, err := resource.UnmarshalNew()
	if err != nil {
		fail(err)
	}
	data, err := protojson.Marshal(message)
	if err != nil {
		fail(err)
	}
	return data
}
