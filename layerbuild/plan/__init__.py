"""Typed stages to a pure, printable DAG of build operations."""
