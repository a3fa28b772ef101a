"""Built-in blocks: one concept per file, each registered with `@block` and read by the registry with `ast`."""
