"""Sharded initialisation, forward and train step for the MMDiT, with state a plain pytree at the jit boundary.

    mesh = make_mesh(cfg.mesh)
    sharded = ShardedModel.create(cfg, mesh)        # params created directly in their shardings
    loss = sharded.forward_loss()(sharded.state, batch)
    step = sharded.train_step(tx)                   # train_step(state, opt_state, batch)
    state, opt_state, loss = step(sharded.state, opt_state, batch)

Every jit has explicit in/out shardings derived from the logical names on the parameters and the rules table;
the train step donates the parameters and optimizer state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from omnidirector_jax.config import Config
from omnidirector_jax.models import backbones, mmdit
from omnidirector_jax.parallel import rules as rules_lib

Batch = dict[str, jax.Array]
LossFn = Callable[[nnx.Module, Batch], jax.Array]


def make_optimizer(cfg: Config) -> optax.GradientTransformation:
    """AdamW from `cfg.train`."""
    t = cfg.train
    return optax.adamw(t.learning_rate, b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay)


@dataclasses.dataclass
class ShardedModel:
    """A graphdef, its parameter state placed on `mesh`, and the shardings used at every jit boundary."""

    cfg: Config
    mesh: Mesh
    graphdef: Any
    state: Any  # the placed parameters (None when the caller places its own with `place`)
    state_shardings: Any

    @property
    def rules(self) -> dict:
        return self.cfg.mesh.rules

    @classmethod
    def create(cls, cfg: Config, mesh: Mesh, seed: int | None = None) -> ShardedModel:
        """Initialises the parameters inside one jit whose outputs are already sharded."""
        seed = cfg.train.seed if seed is None else seed
        abstract = nnx.eval_shape(lambda: backbones.create_model(cfg.model, seed))
        graphdef, abs_state = nnx.split(abstract)
        shardings = rules_lib.param_shardings(abs_state, mesh, cfg.mesh.rules)
        init = jax.jit(lambda: nnx.state(backbones.create_model(cfg.model, seed)), out_shardings=shardings)
        return cls(cfg, mesh, graphdef, init(), shardings)

    def place(self, state: Any) -> Any:
        """Puts a host or differently sharded copy of the state into this model's shardings."""
        return jax.device_put(state, self.state_shardings)

    def batch_shardings(self, batch: Batch) -> Batch:
        """Batch-axis sharding (`activation_batch`) for every input."""
        return {k: NamedSharding(self.mesh, rules_lib.batch_spec(self.rules, self.mesh, v.shape))
                for k, v in batch.items()}

    def _loss(self, loss_fn: LossFn) -> Callable[[Any, Batch], jax.Array]:
        graphdef, mesh, rules = self.graphdef, self.mesh, self.rules

        def loss(state: Any, batch: Batch) -> jax.Array:
            with rules_lib.activation_sharding(mesh, rules):
                return loss_fn(nnx.merge(graphdef, state), batch)

        return loss

    def forward(self, batch_like: Batch) -> Callable[[Any, Batch], jax.Array]:
        """Jitted `(state, batch) -> velocity [B, F, H, W, C]`, the output sharded on the batch axis."""
        graphdef, mesh, rules = self.graphdef, self.mesh, self.rules

        def fwd(state: Any, batch: Batch) -> jax.Array:
            with rules_lib.activation_sharding(mesh, rules):
                model = nnx.merge(graphdef, state)
                latents, frame_t, _ = mmdit.assemble_inputs(batch["ref"], batch.get("grid"), batch["video"],
                                                            batch["t"])
                return model(latents, frame_t, batch["text"], batch["text_mask"])

        out_spec = PartitionSpec(*rules_lib.batch_spec(rules, mesh, (batch_like["ref"].shape[0],)))
        return jax.jit(fwd, in_shardings=(self.state_shardings, self.batch_shardings(batch_like)),
                       out_shardings=NamedSharding(mesh, out_spec))

    def forward_loss(self, batch_like: Batch, loss_fn: LossFn = mmdit.flow_loss) -> Callable[[Any, Batch], jax.Array]:
        """Jitted `(state, batch) -> scalar loss`."""
        return jax.jit(self._loss(loss_fn), in_shardings=(self.state_shardings, self.batch_shardings(batch_like)),
                       out_shardings=NamedSharding(self.mesh, PartitionSpec()))

    def grad_fn(self, batch_like: Batch, loss_fn: LossFn = mmdit.flow_loss) -> Callable[[Any, Batch], Any]:
        """Jitted `(state, batch) -> (loss, grads)`, grads sharded like the parameters."""
        return jax.jit(jax.value_and_grad(self._loss(loss_fn)),
                       in_shardings=(self.state_shardings, self.batch_shardings(batch_like)),
                       out_shardings=(NamedSharding(self.mesh, PartitionSpec()), self.state_shardings))

    @classmethod
    def from_abstract(cls, cfg: Config, mesh: Mesh) -> ShardedModel:
        """Graphdef and shardings only (no parameters): place a state with :meth:`place`."""
        graphdef, abstract = backbones.abstract_model(cfg.model)
        return cls(cfg, mesh, graphdef, None, rules_lib.param_shardings(abstract, mesh, cfg.mesh.rules))

    def _abstract_state(self) -> Any:
        return jax.eval_shape(lambda: nnx.state(backbones.create_model(self.cfg.model)))

    def opt_shardings(self, tx: optax.GradientTransformation) -> Any:
        """Optimizer-state shardings: moments like their parameters, scalars (counts) replicated."""
        abs_opt = jax.eval_shape(tx.init, self._abstract_state())
        replicated = NamedSharding(self.mesh, PartitionSpec())
        return optax.tree_map_params(tx, lambda _, s: s, abs_opt, self.state_shardings,
                                     transform_non_params=lambda _: replicated,
                                     is_leaf=lambda x: isinstance(x, nnx.Variable))

    def init_optimizer(self, tx: optax.GradientTransformation, state: Any = None) -> Any:
        """Optimizer state for `state` (default: this model's), created in its shardings."""
        state = self.state if state is None else state
        return jax.jit(tx.init, in_shardings=(self.state_shardings,), out_shardings=self.opt_shardings(tx))(state)

    def train_step(self, tx: optax.GradientTransformation, batch_like: Batch, loss_fn: LossFn = mmdit.flow_loss
                   ) -> Callable[[Any, Any, Batch], tuple[Any, Any, jax.Array]]:
        """Jitted `train_step(state, opt_state, batch) -> (state, opt_state, loss)`: forward, backward and
        the optimizer update in one program; state and optimizer state are donated."""
        loss = self._loss(loss_fn)

        def step(state: Any, opt_state: Any, batch: Batch) -> tuple[Any, Any, jax.Array]:
            value, grads = jax.value_and_grad(loss)(state, batch)
            updates, opt_state = tx.update(grads, opt_state, state)
            return optax.apply_updates(state, updates), opt_state, value

        opt_sh = self.opt_shardings(tx)
        scalar = NamedSharding(self.mesh, PartitionSpec())
        return jax.jit(step, in_shardings=(self.state_shardings, opt_sh, self.batch_shardings(batch_like)),
                       out_shardings=(self.state_shardings, opt_sh, scalar), donate_argnums=(0, 1))
