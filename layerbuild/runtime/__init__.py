"""Overlay rootfs and Linux namespaces for RUN steps and `layerbuild run`."""
