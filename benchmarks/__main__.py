"""Benchmarks: ``python tools/bench.py {decoder,decoding,training,scst,data,all} [--quick]``.

Each benchmark measures our implementation and a reference side by side in one process, prints
a table of ratios and writes it to ``bench_results/<name>.{json,md}`` (the README quotes them);
``data`` instead times the start of a COCO-scale training run, phase by phase, in a fresh process.
The benchmarks live in ``tools/bench_<name>.py``; each has ``run(quick: bool) -> dict`` with
the keys ``rows`` (list of dicts) and ``markdown`` (the table as text).
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repo on sys.path)
import torch

BENCHMARKS = ("decoder", "decoding", "training", "scst", "data")
RESULTS = Path(__file__).resolve().parents[1] / "bench_results"


def machine() -> str:
    """A one-line description of where the numbers come from."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"{device}, torch {torch.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=[*BENCHMARKS, "all"])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in BENCHMARKS if args.name == "all" else (args.name,):
        module = importlib.import_module(f"bench_{name}")
        start = time.perf_counter()
        result = module.run(quick=args.quick)
        result["machine"] = machine()
        result["seconds"] = round(time.perf_counter() - start, 1)
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        header = f"<!-- tools/bench.py {name}: {result['machine']}; {result['seconds']} s -->\n"
        (args.out / f"{name}.md").write_text(header + result["markdown"].rstrip() + "\n")
        print(f"\n== {name} ({result['seconds']} s) ==\n{result['markdown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
