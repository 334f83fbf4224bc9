"""The evaluation network's training step, JAX against PyTorch, same CPU.

Retraining is 600 epochs in the papers, so its step matters as much as the
search's.  Both rows train the same genotype (DARTS V2 by default) in the
paper's network (C = 36, 20 cells, auxiliary head, drop-path 0.2) on
synthetic 32x32 images, each in a process of its own:

* ``jax``: ``retrain.make_functions``'s jitted ``train_step``, as
  ``xnas-train`` runs it (augmentation, label smoothing, Nesterov SGD with
  weight decay and clipping, donated state);
* ``torch``: ``torch_evalnet``'s ``NetworkCIFAR`` with the same weights and
  DARTS's ``train.py`` step.

Prints the step times (``timing``: one warm-up step, then the timed steps),
their ratio, and each process's peak memory (host RSS; ``peak_memory``:
whole, and steady during the timed steps).  Like ``retrain``'s loop, the JAX
row hands the compiler's freed heap back after each compilation
(``host_memory``) unless ``--keep-heap``.

  python benchmarks/evalnet_step.py --batch 32 --steps 3
  python benchmarks/evalnet_step.py --batch 96 --steps 2 --genotype xnas
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import peak_memory
import timing


def config_for(args):
  from xnas_jax import config_defaults  # pylint: disable=import-outside-toplevel
  c = config_defaults.eval_config()
  c.dataset, c.channels, c.num_cells = "synthetic_cifar10", args.channels, args.cells
  c.batch_size, c.num_devices, c.epochs = args.batch, 1, 600
  c.augment.pad, c.augment.flip, c.augment.cutout = 4, True, 16
  c.limit = args.batch * (args.steps + 2)
  return c


def jax_step_function(args):
  """``step(i)``: the JAX row's ``i``-th training step; returns its metrics."""
  import jax  # pylint: disable=import-outside-toplevel
  from xnas_jax import input_pipeline, published, retrain  # pylint: disable=import-outside-toplevel
  run = retrain.build(config_for(args), published.get(args.genotype))
  state = retrain.init_state(run, jax.random.key(0))
  state["epoch"] = jax.numpy.asarray(300, jax.numpy.int32)  # drop-path at half its final rate
  fns = retrain.make_functions(run)
  images, labels = jax.device_put((run.train.images, run.train.labels))
  idx = input_pipeline.epoch_batches(jax.random.key(1), len(run.train), args.batch, 0)

  def step(i):
    nonlocal state
    state, m = fns["train_step"](state, images, labels, jax.device_put(idx[i]))
    return m

  return step


def measure_jax(args) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from xnas_jax import host_memory  # pylint: disable=import-outside-toplevel
  if not args.keep_heap:
    host_memory.install()  # as retrain.train_and_evaluate does
  step = jax_step_function(args)
  first, step_s, m = timing.warm_then_time(step, args.steps, jax.block_until_ready)
  return {"row": "jax", "device": str(jax.devices()[0].platform), "step_s": step_s,
          "first_step_s": first, "finite": bool(np.isfinite(np.asarray(m)).all())}


def measure_torch(args) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import torch_evalnet  # pylint: disable=import-outside-toplevel
  from xnas_jax import input_pipeline, published, retrain  # pylint: disable=import-outside-toplevel
  run = retrain.build(config_for(args), published.get(args.genotype))
  x0 = jax.numpy.zeros((2,) + run.train.images.shape[1:])
  variables = run.net.init({"params": jax.random.key(0), "dropout": jax.random.key(0)}, x0, True)
  net = torch_evalnet.NetworkCIFAR(run.net, x0.shape[-1], x0.shape[1]).load_jax(variables)
  net.train()
  net.drop_prob = run.config.drop_path_prob * 300 / run.config.epochs
  device = args.torch_device
  step = torch_evalnet.TrainStep(net, aux_weight=run.config.aux_weight,
                                 grad_clip=run.config.grad_clip, device=device)

  def batch(i):
    idx = input_pipeline.epoch_batches(jax.random.key(1), len(run.train), args.batch, 0)[i]
    x = input_pipeline.standardize(run.train.images[idx], run.mean, run.std)
    return (torch.from_numpy(np.array(x).transpose(0, 3, 1, 2).copy()).to(device),
            torch.from_numpy(np.array(run.train.labels[idx])).long().to(device))

  batches = [batch(i) for i in range(args.steps + 1)]
  first, step_s, loss = timing.warm_then_time(lambda i: step.step(*batches[i]), args.steps,
                                              timing.torch_sync(device))
  where = (torch.cuda.get_device_name() if device.startswith("cuda")
           else f"{torch.get_num_threads()} threads")
  return {"row": "torch", "device": f"torch {torch.__version__}, {where}", "step_s": step_s,
          "first_step_s": first,
          "finite": bool(np.isfinite(float(loss)))}


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--channels", type=int, default=36)
  ap.add_argument("--cells", type=int, default=20)
  ap.add_argument("--genotype", default="darts_v2")
  ap.add_argument("--torch-device", default="cpu", help="the PyTorch row's device (cuda)")
  ap.add_argument("--keep-heap", action="store_true",
                  help="JAX row: without host_memory's trim after each compilation")
  ap.add_argument("--one", default="", help=argparse.SUPPRESS)  # internal: run one row
  args = ap.parse_args()
  if args.one:
    r = (measure_torch if args.one == "torch" else measure_jax)(args)
    r["peak_bytes"] = peak_memory.process_peak_bytes()
    r["steady_peak_bytes"] = peak_memory.steady_peak_bytes()
    print(json.dumps(r))
    return
  results = {}
  for row in ("jax", "torch"):
    cmd = [sys.executable, __file__, "--one", row] + [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
        if k not in ("one", "keep_heap")]
    cmd += ["--keep-heap"] if args.keep_heap else []
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
      print(f"{row}: failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
      sys.exit(1)
    results[row] = json.loads(proc.stdout.strip().splitlines()[-1])
  j, t = results["jax"], results["torch"]
  print(f"evaluation network {args.genotype}, C={args.channels}, {args.cells} cells, 32x32, "
        f"batch {args.batch}, {args.steps} timed steps; {t['device']}")
  print("| row | step ms | first step s | peak MiB | steady peak MiB | finite |")
  print("|---|---|---|---|---|---|")
  for r in (j, t):
    print(f"| {r['row']} | {r['step_s'] * 1e3:.0f} | {r['first_step_s']:.1f} "
          f"| {r['peak_bytes'] / 2**20:.0f} | {r['steady_peak_bytes'] / 2**20:.0f} "
          f"| {r['finite']} |")
  print(f"\nJAX speed / PyTorch: {t['step_s'] / j['step_s']:.2f}; JAX peak / PyTorch: "
        f"{j['peak_bytes'] / t['peak_bytes']:.2f} (steady: "
        f"{j['steady_peak_bytes'] / t['steady_peak_bytes']:.2f})")


if __name__ == "__main__":
  main()
