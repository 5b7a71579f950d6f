"""TFDS dataset `omnidirector_clips`: the clip records of an `omnidirector build-dataset` folder."""
