"""Logical axis names -> mesh axes, for parameters and activations, from the ONE rules table in the config.

Every parameter carries logical names in its `out_sharding` metadata (set with `nnx.with_partitioning`);
activations are constrained with :func:`constrain` inside an :func:`activation_sharding` context. A mesh axis
is used at most once per array, axes of size 1 are dropped, and a dimension that the mesh axes do not divide
stays replicated (so tiny test models shard what they can instead of failing).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = Mapping[str, str | Sequence[str] | None]


def logical_to_spec(
    names: Sequence[str | None],
    rules: Rules,
    mesh_sizes: Mapping[str, int],
    shape: Sequence[int] | None = None,
) -> PartitionSpec:
    """PartitionSpec for an array whose dimensions carry logical `names` (None: replicated)."""
    used: set[str] = set()
    spec: list[Any] = []
    for dim, name in enumerate(names):
        if name is None:
            spec.append(None)
            continue
        if name not in rules:
            raise KeyError(f"logical axis '{name}' has no entry in the sharding rules")
        target = rules[name]
        axes = [target] if isinstance(target, str) else list(target or [])
        axes = [a for a in axes if a not in used and mesh_sizes.get(a, 1) > 1]
        if shape is not None:
            while axes and shape[dim] % math.prod(mesh_sizes[a] for a in axes):
                axes.pop()
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    while spec and spec[-1] is None:
        spec.pop()
    return PartitionSpec(*spec)


def _mesh_sizes(mesh: Mesh) -> dict[str, int]:
    return dict(mesh.shape)


def param_specs(state: Any, mesh: Mesh, rules: Rules) -> Any:
    """A tree like `state` (an nnx.State of Variables) with each Variable's value replaced by its spec."""
    sizes = _mesh_sizes(mesh)

    def spec(v: nnx.Variable) -> nnx.Variable:
        names = v.get_metadata().get("out_sharding")
        if names is None:
            raise ValueError(f"parameter of shape {v.shape} has no logical axis names")
        return v.replace(logical_to_spec(names, rules, sizes, v.shape))

    return jax.tree.map(spec, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def param_shardings(state: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for every parameter of `state` (same tree structure)."""
    specs = param_specs(state, mesh, rules)
    return jax.tree.map(lambda p: NamedSharding(mesh, p), specs, is_leaf=lambda x: isinstance(x, PartitionSpec))


def spec_table(state: Any, mesh: Mesh, rules: Rules) -> dict[str, dict[str, Any]]:
    """`{param path: {"shape", "logical", "spec"}}`, JSON-friendly; the golden sharding tables store this."""
    table = {}
    sizes = _mesh_sizes(mesh)
    for path, v in nnx.to_flat_state(state):
        names = v.get_metadata().get("out_sharding")
        spec = logical_to_spec(names, rules, sizes, v.shape)
        table["/".join(str(p) for p in path)] = {
            "shape": list(v.shape),
            "logical": [n for n in names],
            "spec": [list(s) if isinstance(s, tuple) else s for s in spec],
        }
    return table


_ACTIVE: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar("activation_rules", default=None)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: Rules) -> Iterator[None]:
    """Within this context (entered around tracing), :func:`constrain` pins activations to the mesh."""
    token = _ACTIVE.set((mesh, rules))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_mesh() -> tuple[Mesh, Rules] | None:
    """The (mesh, rules) of the enclosing :func:`activation_sharding`, or None."""
    return _ACTIVE.get()


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """`with_sharding_constraint` by logical names; a no-op outside :func:`activation_sharding`."""
    active = _ACTIVE.get()
    if active is None:
        return x
    mesh, rules = active
    spec = logical_to_spec(names, rules, _mesh_sizes(mesh), x.shape)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def batch_spec(rules: Rules, mesh: Mesh, shape: Sequence[int]) -> PartitionSpec:
    """Spec for an input whose first dimension is the batch (the rest replicated)."""
    return logical_to_spec(["activation_batch"] + [None] * (len(shape) - 1), rules, _mesh_sizes(mesh), shape)
