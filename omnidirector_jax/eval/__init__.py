"""Evaluation: camera metrics (RRE, RTE, R-Pre, T-Pre, Tem-Pre) between a reference and a generated video."""
