"""The toy studies of the XNAS paper (sec. 8, Fig. 2), on the search's own optimizers.

Each forecaster holds log-weights ``a`` over ``N`` experts with constant
predictions ``f_i`` (the unit axes), so its prediction is ``p = softmax(a)``
and a loss ``l(p)`` gives

* XNAS (Alg. 1) the gradient w.r.t. the mixture weight,
  ``dl/du_i = grad_p l . f_i`` (eq. 35, 45-47), fed to ``optim.xnas``;
* GD with softmax the gradient w.r.t. the logit,
  ``dl/da_i = grad_p l . u_i (f_i - p)`` (eq. 37, 42-44, 52-53), fed to
  ``optim.gd_softmax``.

The problems run as ``lax.scan`` over steps, the Monte-Carlo study as ``vmap``
over runs, all jitted.  ``python -m xnas_jax.toys --out DIR`` writes the
figures as PNG files (needs matplotlib).
"""
from __future__ import annotations

import argparse
import functools
import os
import tempfile
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from xnas_jax import arch as arch_lib
from xnas_jax import config_defaults
from xnas_jax import optim
from xnas_jax import train

METHODS = ("xnas", "gd_softmax")
Loss = Callable[[jax.Array, jax.Array], jax.Array]  # (p, step) -> scalar


def optimizer(method: str, learning_rate: float, grad_bound: float, horizon: int,
              wipeout: bool = True) -> optax.GradientTransformation:
  """The transformation a toy forecaster uses: XNAS or GD with softmax."""
  if method == "xnas":
    if not wipeout:
      return optax.chain(optim.clip_rewards(grad_bound), optim.exponentiated_gradient(learning_rate))
    return optim.xnas(learning_rate, grad_bound, horizon)
  if method == "gd_softmax":
    return optim.gd_softmax(learning_rate)
  raise ValueError(f"unknown method {method!r}; expected one of {list(METHODS)}")


def forecaster_weights(a: jax.Array, opt_state=None) -> jax.Array:
  """``u = softmax(a)`` over the experts XNAS has not wiped out (Alg. 1, line 6)."""
  found = optax.tree_utils.tree_get_all_with_path(opt_state, "mask") if opt_state is not None else []
  if not found:
    return jax.nn.softmax(a)
  return arch_lib.masked_softmax(a, found[0][1])


def logit_gradient(u: jax.Array, g_u: jax.Array) -> jax.Array:
  """``dl/da_i = u_i (dl/du_i - u . dl/du)``: eq. 37 with unit-axis experts."""
  return u * (g_u - jnp.dot(g_u, u))


def update_terms(loss: Loss, a: jax.Array, step: jax.Array,
                 opt_state=None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(p, dl/du, dl/da)`` at log-weights ``a`` (eq. 35 and 37)."""
  p = forecaster_weights(a, opt_state)
  g_p = jax.grad(loss)(p, step)
  g_u = g_p  # f_i is the i-th unit axis: grad_p l . f_i = d l / d p_i
  return p, g_u, logit_gradient(p, g_u)


def run_trajectory(loss: Loss, init_logits: jax.Array, num_steps: int, method: str, *,
                   learning_rate: float, grad_bound: float = 1.0,
                   wipeout: bool = True) -> dict[str, jax.Array]:
  """Optimizes ``loss`` over the simplex for ``num_steps`` steps.

  Returns per step (before each update): ``p`` ``[T, N]``, the loss, and the
  update term each method applies, ``dl/du`` (XNAS) and ``dl/da`` (GD).
  """
  a0 = jnp.asarray(init_logits, jnp.float32)
  tx = optimizer(method, learning_rate, grad_bound, num_steps, wipeout)

  def step(carry, t):
    a, opt_state = carry
    p, g_u, g_a = update_terms(loss, a, t, opt_state)
    g = g_u if method == "xnas" else g_a
    updates, opt_state = tx.update(g, opt_state, a)
    a = optax.apply_updates(a, updates)
    return (a, opt_state), {"p": p, "loss": loss(p, t), "g_u": g_u, "g_a": g_a}

  (a, opt_state), out = jax.lax.scan(step, (a0, tx.init(a0)), jnp.arange(num_steps))
  out["final_p"] = forecaster_weights(a, opt_state)
  return out


# --- sec. 8.1: the 3-D axes problem -----------------------------------------

def axes3d_loss(switch_step: int = 30) -> Loss:
  """``l = 2z`` for ``switch_step`` steps, then ``l = -y - 2z``."""
  def loss(p, t):
    x, y, z = p
    return jnp.where(t < switch_step, 2.0 * z, -y - 2.0 * z)
  return loss


@functools.partial(jax.jit, static_argnames=("method", "num_steps", "switch_step"))
def axes3d(method: str, *, learning_rate: float = 0.1, num_steps: int = 120,
           switch_step: int = 30) -> dict[str, jax.Array]:
  """Sec. 8.1: trajectories from the uniform point; ``g_u[:, 2]`` and
  ``g_a[:, 2]`` are the z-axis update terms of XNAS (eq. 47) and GD (eq. 44)."""
  return run_trajectory(axes3d_loss(switch_step), jnp.zeros(3), num_steps, method,
                        learning_rate=learning_rate, grad_bound=2.0)


# --- sec. 8.2: the 2-D axes problems ----------------------------------------

AXES2D = {
    # name: (loss, initial logits (a_x, a_y)); optimum at (x, y) = (1, 0).
    "linear_balanced": (lambda p, t: -p[0], (0.0, 0.0)),
    "linear_imbalanced": (lambda p, t: -p[0], (0.0, 5.0)),
    "quadratic": (lambda p, t: 0.5 * (p[0] - 1.0) ** 2 + 0.5 * p[1] ** 2, (0.0, 0.0)),
}


@functools.partial(jax.jit, static_argnames=("problem", "method", "num_steps"))
def axes2d(problem: str, method: str, *, learning_rate: float = 0.1,
           num_steps: int = 50) -> dict[str, jax.Array]:
  """Sec. 8.2: trajectory, distance to the optimum ``(1, 0)`` and the magnitude
  of the applied update term, per step."""
  loss, init = AXES2D[problem]
  out = run_trajectory(loss, jnp.asarray(init), num_steps, method, learning_rate=learning_rate,
                       grad_bound=1.0, wipeout=False)
  out["distance"] = jnp.linalg.norm(out["p"] - jnp.array([1.0, 0.0]), axis=-1)
  out["grad_magnitude"] = jnp.abs((out["g_u"] if method == "xnas" else out["g_a"])[:, 0])
  return out


# --- sec. 8.3: regret and correct selection ---------------------------------

@functools.partial(jax.jit, static_argnames=("num_experts", "num_steps", "num_runs", "grad_bound",
                                             "method"))
def statistical_selection(key: jax.Array, *, num_experts: int, num_steps: int = 1000,
                          num_runs: int = 1000, reward_std: float = 1.0,
                          learning_rate: float | None = None, grad_bound: float = 4.0,
                          method: str = "xnas") -> dict[str, jax.Array]:
  """Sec. 8.3: biases ``b_i ~ N(0, 1)``, rewards ``R_t,i ~ N(b_i, sigma^2)``.

  The regret (eq. 2) of a run is ``max_i sum_t R_t,i - sum_t u_t . R_t`` with
  ``u_t`` the forecaster's weights *before* step ``t``'s update; a selection is
  correct when the final top weight is the top bias.  Rewards beyond
  ``grad_bound`` are clipped for XNAS (its L-bounded setting).  The learning
  rate defaults to eq. 4's ``sqrt(2 ln N / (T L^2))`` for both methods.

  Returns the mean ``regret`` and ``correct_fraction`` and the per-run arrays
  ``regrets`` and ``correct``.
  """
  lr = learning_rate if learning_rate is not None else optim.regret_optimal_learning_rate(
      num_experts, num_steps, grad_bound)
  tx = optimizer(method, lr, grad_bound, num_steps)

  def one_run(key):
    k_bias, k_noise = jax.random.split(key)
    bias = jax.random.normal(k_bias, (num_experts,))
    a0 = jnp.zeros((num_experts,))

    def step(carry, k):
      a, opt_state, gained = carry
      rewards = bias + reward_std * jax.random.normal(k, (num_experts,))
      u = forecaster_weights(a, opt_state)  # weights before the update
      g_u = -rewards  # a linear loss: l(p) = -R . p, so dl/du_i = -R_i
      g = g_u if method == "xnas" else logit_gradient(u, g_u)
      updates, opt_state = tx.update(g, opt_state, a)
      return (optax.apply_updates(a, updates), opt_state, gained + jnp.dot(u, rewards)), rewards

    keys = jax.random.split(k_noise, num_steps)
    (a, opt_state, gained), rewards = jax.lax.scan(step, (a0, tx.init(a0), 0.0), keys)
    regret = jnp.max(jnp.sum(rewards, axis=0)) - gained
    return regret, jnp.argmax(forecaster_weights(a, opt_state)) == jnp.argmax(bias)

  regrets, correct = jax.vmap(one_run)(jax.random.split(key, num_runs))
  return {"regret": regrets.mean(), "correct_fraction": correct.mean(),
          "regrets": regrets, "correct": correct}


def numpy_statistical_selection(seed: int, *, num_experts: int, num_steps: int, num_runs: int,
                                reward_std: float, learning_rate: float, grad_bound: float,
                                method: str) -> dict[str, float]:
  """The same study as a plain NumPy loop of Alg. 1 (with its wipeout) and of
  GD with softmax: the benchmark's reference."""
  rng = np.random.default_rng(seed)
  regrets, correct = [], []
  for _ in range(num_runs):
    bias = rng.normal(size=num_experts)
    reward_seq = bias + reward_std * rng.normal(size=(num_steps, num_experts))
    regret, a, alive = numpy_forecaster(reward_seq, learning_rate, grad_bound, method)
    regrets.append(regret)
    correct.append(np.argmax(np.where(alive, a, -np.inf)) == np.argmax(bias))
  return {"regret": float(np.mean(regrets)), "correct_fraction": float(np.mean(correct))}


def numpy_forecaster(rewards: np.ndarray, learning_rate: float, grad_bound: float,
                     method: str) -> tuple[float, np.ndarray, np.ndarray]:
  """One forecaster over a ``[T, N]`` reward sequence, as a plain loop.

  Returns the regret (eq. 2), the final log-weights and the live experts.
  """
  steps, n = rewards.shape
  a, alive = np.zeros(n), np.ones(n, bool)
  gained = 0.0
  for t in range(steps):
    r = rewards[t]
    u = np.where(alive, np.exp(a - a[alive].max()), 0.0)
    u /= u.sum()
    gained += u @ r
    if method == "xnas":
      a = a + learning_rate * np.where(alive, np.clip(r, -grad_bound, grad_bound), 0.0)
      gap = 2.0 * learning_rate * grad_bound * (steps - (t + 1))
      alive &= a >= a[alive].max() - gap
    else:
      a = a + learning_rate * u * (r - u @ r)
  return float(rewards.sum(axis=0).max() - gained), a, alive


# --- Fig. 2: entropy vs weight decay ----------------------------------------

def entropy_vs_weight_decay(weight_decays, *, epochs: int = 4, seed: int = 0, channels: int = 4,
                            num_cells: int = 3, limit: int = 320, arch_learning_rate: float = 0.03,
                            workdir: str | None = None):
  """Mean normalized entropy (eq. 54-55) of the normal cell after short DARTS
  searches (Adam on the logits) on digits, one per weight-decay value of the
  architecture optimizer.  The architecture learning rate is 100x DARTS's so
  that a search of a few dozen steps moves the logits as far as a full one.
  Returns a list of ``(weight_decay, entropy)``."""
  out = []
  for wd in weight_decays:
    c = config_defaults.base_config()
    c.op_set = "darts"
    c.channels, c.num_cells, c.epochs, c.seed, c.limit = channels, num_cells, epochs, seed, limit
    c.arch_optimizer.name = "darts_adam"
    c.arch_optimizer.weight_decay = float(wd)
    c.arch_optimizer.learning_rate = arch_learning_rate
    c.num_devices = 1  # a toy: the same numbers whatever devices the kernel sees
    c.figures = False  # the notebook draws its own
    with tempfile.TemporaryDirectory(dir=workdir) as d:
      result = train.train_and_evaluate(c, d, progress=False)
    out.append((float(wd), result["summary"]["entropy_normal"]))
  return out


# --- figures ------------------------------------------------------------------

def figure_axes3d():
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for method in METHODS:
    r = axes3d(method)
    axes[0].plot(r["p"][:, 2], label=f"{method}: z")
    axes[0].plot(r["p"][:, 1], "--", label=f"{method}: y")
    term = r["g_u"][:, 2] if method == "xnas" else r["g_a"][:, 2]
    axes[1].plot(term, label=method)
  axes[0].set(xlabel="step", ylabel="weight", title="3-D axes: weights of z and y")
  axes[1].set(xlabel="step", ylabel="z update term", title="eq. 47 (XNAS) vs eq. 44 (GD)")
  for ax in axes:
    ax.axvline(30, color="grey", lw=0.5)
    ax.legend()
  fig.tight_layout()
  return fig


def figure_axes2d():
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(len(AXES2D), 3, figsize=(12, 3.2 * len(AXES2D)))
  for row, problem in zip(axes, AXES2D):
    row[0].plot([0, 1], [1, 0], "k--", lw=0.5)
    for method in METHODS:
      r = axes2d(problem, method)
      row[0].plot(r["p"][:, 0], r["p"][:, 1], "-", label=method)
      row[0].plot(r["p"][-1, 0], r["p"][-1, 1], "o")
      row[1].plot(r["distance"], label=method)
      row[2].plot(r["grad_magnitude"], label=method)
    row[0].set(xlabel="x", ylabel="y", title=problem)
    row[1].set(xlabel="step", title="distance to (1, 0)")
    row[2].set(xlabel="step", title="|update term| of x")
    row[0].legend()
  fig.tight_layout()
  return fig


def statistical_study(key: jax.Array, experts=(2, 4, 8, 16, 32, 64), stds=(0.5, 1, 2, 4, 8), *,
                      num_runs: int = 1000, num_steps: int = 1000, experts_for_stds: int = 8
                      ) -> dict[str, dict[tuple[str, float], dict[str, float]]]:
  """Fig. 8's two sweeps: against ``N`` (sigma = 1, L = 4) and against sigma
  (``N = experts_for_stds``, L = 4 sqrt(1 + sigma^2), four standard deviations
  of a reward).  Returns ``{"by_experts": {(method, N): means},
  "by_std": {(method, sigma): means}}``."""
  out = {"by_experts": {}, "by_std": {}}
  for method in METHODS:
    for n in experts:
      r = statistical_selection(key, num_experts=n, num_steps=num_steps, num_runs=num_runs,
                                method=method)
      out["by_experts"][(method, n)] = {k: float(r[k]) for k in ("regret", "correct_fraction")}
    for s in stds:
      r = statistical_selection(key, num_experts=experts_for_stds, num_steps=num_steps,
                                num_runs=num_runs, reward_std=s,
                                grad_bound=4.0 * float(np.sqrt(1 + s * s)), method=method)
      out["by_std"][(method, s)] = {k: float(r[k]) for k in ("regret", "correct_fraction")}
  return out


def figure_statistical(study):
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for method in METHODS:
    n = sorted(k[1] for k in study["by_experts"] if k[0] == method)
    s = sorted(k[1] for k in study["by_std"] if k[0] == method)
    by_n = [study["by_experts"][(method, k)] for k in n]
    by_s = [study["by_std"][(method, k)] for k in s]
    axes[0].plot(n, [r["regret"] for r in by_n], "o-", label=method)
    axes[1].plot(n, [r["correct_fraction"] for r in by_n], "o-", label=method)
    axes[2].plot(s, [r["correct_fraction"] for r in by_s], "o-", label=method)
  axes[0].set(xscale="log", xlabel="experts N", ylabel="mean regret", title="regret vs N (sigma = 1)")
  axes[1].set(xscale="log", xlabel="experts N", ylabel="correct selection", title="vs N (sigma = 1)")
  axes[2].set(xscale="log", xlabel="reward std sigma", ylabel="correct selection", title="vs sigma")
  for ax in axes:
    ax.legend()
  fig.tight_layout()
  return fig


def rate_sweep(key: jax.Array, multipliers=(0.25, 0.5, 1, 2, 4, 8, 16, 32, 64), *,
               num_experts: int = 8, reward_std: float = 1.0, grad_bound: float = 4.0,
               num_runs: int = 1000, num_steps: int = 1000) -> dict[str, dict[str, np.ndarray]]:
  """Sec. 8.3 at learning rates ``m * eta*`` for each ``m`` in ``multipliers``
  (``eta* = sqrt(2 ln N / (T L^2))``, eq. 4), both methods on the same runs
  (same key: same biases and rewards).  The paper gives no rates for this
  study; this is how its claims depend on them.

  Returns ``{method: {"multiplier", "rate", "regret", "correct_fraction"}}``,
  one entry per multiplier.
  """
  eta = optim.regret_optimal_learning_rate(num_experts, num_steps, grad_bound)
  m = np.asarray(multipliers, np.float32)
  out = {}
  for method in METHODS:
    def one(lr, method=method):
      r = statistical_selection(key, num_experts=num_experts, num_steps=num_steps,
                                num_runs=num_runs, reward_std=reward_std, learning_rate=lr,
                                grad_bound=grad_bound, method=method)
      return r["regret"], r["correct_fraction"]
    regret, correct = jax.lax.map(one, jnp.asarray(m * eta))
    out[method] = {"multiplier": m, "rate": m * eta, "regret": np.asarray(regret),
                   "correct_fraction": np.asarray(correct)}
  return out


def figure_rate_sweep(sweeps: dict[str, dict[str, dict[str, np.ndarray]]]):
  """Regret (top) and correct selection (bottom) against the learning rate in
  units of eta*, one column per setting (``{label: rate_sweep(...)}``)."""
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(2, len(sweeps), figsize=(3.6 * len(sweeps), 6.5), squeeze=False)
  for col, (label, sweep) in enumerate(sweeps.items()):
    for method, r in sweep.items():
      axes[0, col].plot(r["multiplier"], r["regret"], "o-", label=method)
      axes[1, col].plot(r["multiplier"], r["correct_fraction"], "o-", label=method)
    axes[0, col].set(xscale="log", yscale="log", title=label)
    axes[1, col].set(xscale="log", xlabel="learning rate / eta*")
    for ax in axes[:, col]:
      ax.axvline(1.0, color="gray", lw=0.5)
  axes[0, 0].set(ylabel="mean regret")
  axes[1, 0].set(ylabel="correct selection")
  axes[0, 0].legend()
  fig.tight_layout()
  return fig


def figure_entropy(points):
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(5, 4))
  wd, h = zip(*points)
  ax.plot([max(w, 1e-5) for w in wd], h, "o-")
  ax.set(xscale="log", xlabel="architecture weight decay (0 drawn at 1e-5)",
         ylabel="mean normalized entropy (normal cell)", title="entropy vs weight decay")
  fig.tight_layout()
  return fig


def main(argv=None):
  ap = argparse.ArgumentParser(description="Writes the XNAS toy figures as PNG files.")
  ap.add_argument("--out", default="toy_figures")
  ap.add_argument("--only", nargs="*", default=["axes3d", "axes2d", "statistical", "entropy"])
  ap.add_argument("--runs", type=int, default=1000)
  args = ap.parse_args(argv)
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  os.makedirs(args.out, exist_ok=True)
  figures = {
      "axes3d": figure_axes3d,
      "axes2d": figure_axes2d,
      "statistical": lambda: figure_statistical(statistical_study(jax.random.key(0),
                                                                 num_runs=args.runs)),
      "entropy": lambda: figure_entropy(entropy_vs_weight_decay([0.0, 1e-3, 1e-2, 1e-1])),
  }
  for name in args.only:
    if name not in figures:
      raise SystemExit(f"unknown figure {name!r}; expected some of {list(figures)}")
    path = os.path.join(args.out, f"{name}.png")
    figures[name]().savefig(path, dpi=100)
    print(path)


if __name__ == "__main__":
  main()
