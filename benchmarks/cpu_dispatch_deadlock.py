"""XLA:CPU's deadlock when a loop queues too many multi-device programs, and
the search loop's guard against it (``parallel.step_throttle``).

Each row runs in its own process on ``--devices`` host devices: a jitted
data-parallel SGD step (its weight gradient is an all-reduce over the
devices), dispatched ``--steps`` times, either as fast as Python can
(``unthrottled``) or through ``parallel.step_throttle`` as ``train.py`` and
``retrain.py`` dispatch theirs.  XLA aborts a rendezvous that waits more than
``--timeout`` seconds (its default is 40), so a deadlock shows as an abort.

  python benchmarks/cpu_dispatch_deadlock.py
  python benchmarks/cpu_dispatch_deadlock.py --devices 2 --steps 5000

On jaxlib 0.10.2 with 2 cores the unthrottled loop aborts within seconds at
2, 4 and 8 devices (5 of 8 devices reached the rendezvous); blocking every 32
steps still completes, every 64 aborts.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

CHILD = r"""
import sys, time
import jax, jax.numpy as jnp
from xnas_jax import parallel
steps, throttled = int(sys.argv[1]), sys.argv[2] == "throttled"
mesh = parallel.data_mesh(0)
x = jax.device_put(jnp.ones((16, 64, 64)), parallel.batch_sharded(mesh))
w = parallel.replicate(jnp.full((64, 64), 0.01), mesh)

@jax.jit
def step(w, x):
  return w - 0.1 * jax.grad(lambda w: jnp.mean(jnp.tanh(x @ w)))(w)

wait = parallel.step_throttle(mesh) if throttled else (lambda t: t)
w = wait(step(w, x)).block_until_ready()  # compiled
t = time.perf_counter()
for _ in range(steps):
  w = wait(step(w, x))
w.block_until_ready()
print(f"completed in {time.perf_counter() - t:.2f} s")
"""


def run(variant: str, devices: int, steps: int, timeout: int) -> tuple[str, float]:
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=(
      f"--xla_force_host_platform_device_count={devices} "
      f"--xla_cpu_collective_call_terminate_timeout_seconds={timeout}"))
  t = time.perf_counter()
  p = subprocess.run([sys.executable, "-c", CHILD, str(steps), variant], env=env,
                     capture_output=True, text=True, timeout=timeout + 600, check=False)
  wall = time.perf_counter() - t
  if p.returncode == 0:
    return p.stdout.strip().splitlines()[-1], wall
  stuck = [l for l in p.stderr.splitlines() if "Termination timeout" in l]
  arrived = stuck[0].split("but only ")[-1].split(" of them")[0] if stuck else "?"
  why = f"aborted: rendezvous deadlock, {arrived} of {devices} arrived" if stuck else (
      f"failed (exit {p.returncode})")
  return why, wall


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--devices", type=int, default=8)
  ap.add_argument("--steps", type=int, default=3000)
  ap.add_argument("--timeout", type=int, default=10, help="XLA's rendezvous termination (s)")
  args = ap.parse_args()
  print(f"{args.steps} data-parallel steps on {args.devices} host devices")
  print("| loop | result | wall (s) |\n|---|---|---|")
  for variant in ("unthrottled", "throttled"):
    result, wall = run(variant, args.devices, args.steps, args.timeout)
    print(f"| {variant} | {result} | {wall:.1f} |", flush=True)


if __name__ == "__main__":
  main()
