"""The lowest layer: warehouse and artifact resources, paths, partitions, asset keys, metadata helpers."""
