"""The command-line skin over the library: one module per verb; the only package that imports rich."""
