"""Every accelerator measurement the project needs, as one prepared run.

A GPU is lent only now and then, for minutes, so this runs the whole list in
one call and writes what it measured as it goes: after every item,
``OUT/gpu_suite.json`` (and a short ``OUT/gpu_suite.md``) hold every result so
far, so a run cut short by its time limit still returns them.  Each item is a
benchmark script run in a process of its own, with a timeout; the items are
ordered by how much their numbers are needed, and an item that cannot finish
in the time left (``--budget``) is skipped and recorded as such.

1. the device, and the versions of jax, jaxlib, CUDA and PyTorch;
2. ``search_step.py`` at the paper's search network (C = 16, 8 cells, 32x32),
   batch 64: XNAS and DARTS first order, each against PyTorch on the same GPU
   where PyTorch has CUDA (``--vs-torch``);
3. 8 vmapped seeds against 1 (``xnas_seeds``);
4. the evaluation network's step (C = 36, 20 cells, batch 96) against PyTorch's;
5. the per-backend choices on one cell (``cell_step.py --variants``):
   ``lax.cond`` against masked experts, ``lax.scan`` against unrolled edges
   (compile time too), the depthwise convolution's implementations, bfloat16;
6. a ``jax.profiler`` trace of one XNAS step (``step_profile.py``): the
   costliest operations;
7. ``search_step.py`` at batch 96, and NAS-Bench-201's supernet rows.

On the GPU (the whole run is meant to finish in under 8 minutes):

  python benchmarks/gpu_suite.py --out /tmp/gpu_suite --budget 460

On a CPU, to check that every item runs before a device exists (tiny shapes):

  python benchmarks/gpu_suite.py --smoke --out /tmp/gpu_smoke
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

ENV_SCRIPT = r"""
import json, platform
import jax, jaxlib
info = {"python": platform.python_version(), "jax": jax.__version__,
        "jaxlib": jaxlib.__version__, "backend": jax.default_backend(),
        "devices": [d.device_kind for d in jax.devices()]}
try:
  info["platform_version"] = jax.devices()[0].client.platform_version
except Exception as e:  # pylint: disable=broad-except
  info["platform_version"] = f"unknown ({type(e).__name__})"
try:
  import torch
  info["torch"] = torch.__version__
  info["torch_cuda"] = torch.version.cuda
  info["torch_cuda_available"] = bool(torch.cuda.is_available())
except ImportError:
  info["torch"] = None
  info["torch_cuda_available"] = False
print(json.dumps(info))
"""


def items(args, torch_cuda: bool) -> list[tuple[str, list[str], int]]:
  """``(name, command, timeout seconds)`` of every item, in order."""
  py = sys.executable
  script = lambda name: os.path.join(HERE, name)
  out = lambda name: os.path.join(args.out, f"{name}.json")
  torch = ["--vs-torch", "--torch-device", "cuda"] if torch_cuda else []
  if args.smoke:  # tiny shapes: every item runs, in seconds to a minute each
    size = ["--batch", "2", "--steps", "1", "--channels", "4", "--cells", "3"]
    torch = ["--vs-torch"]
    return [
        ("search_b64", [py, script("search_step.py"), *size, "--rows", "xnas", "darts", *torch,
                        "--json", out("search_b64")], 300),
        ("seeds", [py, script("search_step.py"), *size, "--rows", "xnas_seeds", "--seeds", "2",
                   "--json", out("seeds")], 300),
        ("evalnet", [py, script("evalnet_step.py"), "--batch", "2", "--steps", "1",
                     "--channels", "4", "--cells", "3"], 300),
        ("cell_variants", [py, script("cell_step.py"), "--variants", "--batch", "2", "--size",
                           "8", "--channels", "4", "--repeats", "1", "--json",
                           out("cell_variants")], 600),
        ("profile", [py, script("step_profile.py"), "--row", "xnas", "--batch", "2",
                     "--channels", "4", "--search-cells", "3", "--top", "5"], 300),
        ("search_nb201", [py, script("search_step.py"), "--batch", "2", "--steps", "1",
                          "--channels", "4", "--cells", "1", "--rows", "nb201_darts",
                          "nb201_xnas", *torch, "--json", out("search_nb201")], 300),
    ]
  return [
      ("search_b64", [py, script("search_step.py"), "--batch", "64", "--steps", "10", "--rows",
                      "xnas", "darts", *torch, "--json", out("search_b64")], 240),
      ("seeds", [py, script("search_step.py"), "--batch", "64", "--steps", "5", "--rows",
                 "xnas_seeds", "--seeds", "8", "--json", out("seeds")], 150),
      ("evalnet", [py, script("evalnet_step.py"), "--batch", "96", "--steps", "5",
                   *(["--torch-device", "cuda"] if torch_cuda else [])], 150),
      ("cell_variants", [py, script("cell_step.py"), "--variants", "--batch", "64",
                         "--json", out("cell_variants")], 200),
      ("profile", [py, script("step_profile.py"), "--row", "xnas", "--batch", "64", "--top",
                   "5"], 120),
      ("search_b96", [py, script("search_step.py"), "--batch", "96", "--steps", "10", "--rows",
                      "xnas", "darts", *torch, "--json", out("search_b96")], 200),
      ("search_nb201", [py, script("search_step.py"), "--batch", "64", "--steps", "10",
                        "--rows", "nb201_darts", "nb201_xnas", *torch, "--json",
                        out("search_nb201")], 200),
  ]


def write(args, results: dict) -> None:
  with open(os.path.join(args.out, "gpu_suite.json"), "w") as f:
    json.dump(results, f, indent=1)
  lines = [f"# GPU suite ({'smoke, ' if args.smoke else ''}{results['env'].get('devices')})", ""]
  lines += [f"- {k}: {v}" for k, v in results["env"].items()]
  for name, item in results["items"].items():
    lines += ["", f"## {name} ({item['status']}, {item.get('wall_s', 0):.0f} s)", "",
              item.get("stdout_tail", "").strip()]
  with open(os.path.join(args.out, "gpu_suite.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--out", required=True, help="folder for gpu_suite.json/.md and item JSON")
  ap.add_argument("--budget", type=float, default=460.0, help="seconds for the whole run")
  ap.add_argument("--smoke", action="store_true", help="tiny shapes, on any device")
  ap.add_argument("--only", nargs="*", default=None, help="run these items only")
  args = ap.parse_args()
  os.makedirs(args.out, exist_ok=True)
  start = time.time()
  env = subprocess.run([sys.executable, "-c", ENV_SCRIPT], capture_output=True, text=True,
                       timeout=120, check=False)
  info = (json.loads(env.stdout.strip().splitlines()[-1]) if env.returncode == 0
          else {"error": env.stderr.strip().splitlines()[-1:]})
  results = {"env": info, "smoke": args.smoke, "items": {}}
  write(args, results)
  print(json.dumps(info), flush=True)
  for name, cmd, timeout in items(args, bool(info.get("torch_cuda_available"))):
    if args.only is not None and name not in args.only:
      continue
    left = args.budget - (time.time() - start)
    if left < min(timeout, 60):
      results["items"][name] = {"status": "skipped: no time left", "command": cmd}
      write(args, results)
      continue
    t0 = time.time()
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True, timeout=min(timeout, left),
                            cwd=HERE, check=False)
      status = "ok" if proc.returncode == 0 else f"failed ({proc.returncode})"
      stdout, stderr = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
      status = "timed out"
      stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
      stderr = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
    item = {"status": status, "wall_s": round(time.time() - t0, 1), "command": cmd,
            "stdout_tail": stdout[-4000:], "stderr_tail": stderr[-1500:] if status != "ok" else ""}
    data = os.path.join(args.out, f"{name}.json")
    if os.path.exists(data):
      with open(data) as f:
        item["data"] = json.load(f)
    results["items"][name] = item
    write(args, results)
    print(f"{name}: {status} in {item['wall_s']:.0f} s", flush=True)
  print(f"wrote {os.path.join(args.out, 'gpu_suite.json')} and gpu_suite.md "
        f"({time.time() - start:.0f} s)")
  failed = [n for n, i in results["items"].items() if i["status"] != "ok"]
  sys.exit(1 if failed else 0)


if __name__ == "__main__":
  main()
