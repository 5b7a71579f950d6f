"""Diffusion maths: the rectified-flow objective and the sampler."""
