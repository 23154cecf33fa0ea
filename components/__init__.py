"""ComponentResources of sks-istio-mesh, one per concept."""
