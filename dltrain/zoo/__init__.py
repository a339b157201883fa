"""Named architectures as YAML blocks (data only: the spec loader reads these files, so a
config uses `{type: Block, use: zoo:NAME, ...params}` without importing anything)."""
