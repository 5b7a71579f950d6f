"""Camera math, trajectories, the grid room (scene), and the pure-JAX rasterizer."""
