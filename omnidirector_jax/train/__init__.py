"""Training: the state pytree, the conditions rendered on device, the train step, checkpoints and the loop."""
