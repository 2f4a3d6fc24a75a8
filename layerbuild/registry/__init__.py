"""Push and pull images and cache through an OCI distribution registry.

What a pull receives is trusted only after `layerbuild.image.check_blob` (manifests, configs) and
`layerbuild.image.receive_layer` (layers: digest, size, diff_id and the archive door check).
"""
