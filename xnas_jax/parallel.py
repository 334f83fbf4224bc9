"""Data parallelism with ``jax.jit`` and shardings (no ``pmap``).

A one-axis mesh ``("data",)`` over the devices: the search state and the
data set (gathered by index inside the jitted step) are replicated, the index
batches are split along the batch axis.  Each jitted function then computes
the *global* batch's loss, gradients and batch-norm statistics; XLA inserts
the cross-device reductions, so the weight gradients and the architecture
rewards are sums over all devices and the state stays identical everywhere.
A search on 8 devices equals one on a single device up to float summation
order (tested).

Several processes (``xnas_jax.distributed``): ``jax.devices()`` lists every
process's devices and the mesh spans all of them; each process loads the
same data and draws the same index batches from the same seed, and
``jax.device_put`` places only its own devices' share of each batch.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "data"


def device_config_error(num_devices: int, batch_size: int) -> str | None:
  """What is wrong with a ``num_devices`` / global ``batch_size`` pair (one
  line naming the bad value), or None."""
  n = jax.device_count()
  if jax.process_count() > 1 and num_devices not in (0, n):
    return (f"num_devices {num_devices}: a job of {jax.process_count()} processes searches "
            f"on all its {n} devices (set num_devices to 0)")
  if not 0 <= num_devices <= n:
    return f"num_devices {num_devices} is not in 0..{n} (0 = all devices)"
  if batch_size % (num_devices or n):
    return (f"batch_size {batch_size} is not divisible by the {num_devices or n} devices "
            f"(set num_devices)")
  return None


def data_mesh(num_devices: int = 0) -> Mesh:
  """A ``("data",)`` mesh over the first ``num_devices`` devices (0: all)."""
  devices = jax.devices()
  n = num_devices or len(devices)
  if not 0 < n <= len(devices):
    raise ValueError(f"num_devices {num_devices} is not in 1..{len(devices)} (the devices JAX sees)")
  return Mesh(np.asarray(devices[:n]), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
  """Split along ``batch_axis`` over the mesh's devices."""
  return NamedSharding(mesh, P(*([None] * batch_axis), AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, replicated(mesh))


# XLA:CPU (jaxlib 0.10.2) deadlocks when more than about 32 programs with
# cross-device reductions are queued on a multi-device CPU mesh: some devices'
# shares never reach the all-reduce's rendezvous, and after 40 s XLA aborts the
# process ("Termination timeout ... Expected 8 threads to join the rendezvous,
# but only 5 of them arrived").  A Python loop that only dispatches gets there
# when the devices run behind it (a loaded machine: it aborted a CI run of the
# test suite).  benchmarks/cpu_dispatch_deadlock.py reproduces it in seconds.


def step_throttle(mesh: Mesh) -> Callable[[Any], Any]:
  """What a step loop calls on each step's output before dispatching the
  next: on a multi-device CPU mesh it waits for the step to finish (so one
  step's programs at most are queued, well below the deadlock above),
  elsewhere it returns at once and dispatch runs ahead of the devices."""
  if mesh.size > 1 and mesh.devices.flat[0].platform == "cpu":
    return jax.block_until_ready
  return lambda tree: tree


def shard_batches(batches: np.ndarray, mesh: Mesh) -> list[jax.Array]:
  """Index batches ``[steps, ..., batch]`` on the devices, one array per step,
  each batch split over them.

  All steps move in one ``device_put`` (once per epoch); the loop then hands
  the step's array to the jitted step as it is, with no eager indexing (a
  gather on the devices) per step.
  """
  if batches.shape[-1] % mesh.size:
    raise ValueError(f"batch_size {batches.shape[-1]} is not divisible by the {mesh.size} devices")
  return jax.device_put(list(batches), batch_sharded(mesh, batch_axis=batches.ndim - 2))
