"""Side effects of a build meet here: context hashing, executors, exporters."""
