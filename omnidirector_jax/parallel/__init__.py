"""Device meshes, logical-axis sharding rules and multi-host start-up (imports no model)."""
