"""A local Kubernetes cluster for tests and the demo: control plane, simulated GPU nodes, a kubelet stand-in and Prometheus."""
