"""Networks: the Wan-style causal video VAE, the T5/UMT5 text encoder, the MMDiT and its attention.

Modules here are Flax NNX; checkpoints published for PyTorch are imported by the loaders
(`vae_weights`, `text_encoder.load_text_encoder`), which read safetensors without needing torch.
The MMDiT (`mmdit`) takes `[reference image | camera grid | noisy video]` latents concatenated along frames;
`attention` holds the xla/cudnn/splash registry and `flops` the analytic FLOP counter and MFU helper. Every
parameter carries logical axis names that `omnidirector_jax.parallel` maps to the device mesh.
"""
