"""Perception: reading a reference video into shots and cameras.

Shot boundaries come from TransNetV2 (``transnetv2``, a Flax NNX port with a converter for the PyTorch
weights) or, when no weights are configured, from a classical adaptive content detector (``shots``);
``video`` reads frames with OpenCV.
"""
