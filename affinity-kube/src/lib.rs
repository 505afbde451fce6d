//! Kubernetes side of the LINSTOR affinity controller.
