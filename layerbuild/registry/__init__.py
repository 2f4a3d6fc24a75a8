"""Push and pull images and cache through an OCI distribution registry."""
