"""Device meshes, logical-axis sharding rules and sharded init/train steps for the networks."""
