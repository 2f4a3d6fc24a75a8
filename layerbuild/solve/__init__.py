"""Cache keys, cache lookups and the order of execution of a plan."""
