"""Build hosts over SSH: machines (provisioned hosts, by name), the `serve --stdio` protocol and its client."""
