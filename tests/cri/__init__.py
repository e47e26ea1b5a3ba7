"""A small Kubernetes CRI (runtime.v1) client for the tests: ``api.proto`` plus generated gRPC stubs."""
