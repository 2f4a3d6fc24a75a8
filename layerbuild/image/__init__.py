"""OCI image manifests, configs, layouts and archives."""
