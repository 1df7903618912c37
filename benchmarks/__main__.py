"""Benchmarks: ``python -m benchmarks NAME [--quick]``, NAME one of BENCHMARKS below or all
(``--decoders a,b``: only those decoders, for decoder and decoding).

Each benchmark measures our implementation and a reference side by side in one process, prints
a table of ratios and writes it to ``bench_results/<name>.{json,md}`` (the README quotes them);
``data`` instead times the start of a COCO-scale training run, phase by phase, in a fresh process.
The benchmarks live in ``benchmarks/<name>.py``; each has ``run(quick: bool) -> dict`` with
the keys ``rows`` (list of dicts) and ``markdown`` (the table as text). ``--check`` runs, instead
of the timings, the check that the references compute our functions (decoder, decoding).
Run from the repository root: the references are ``tests/references.py``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

BENCHMARKS = ("decoder", "decoding", "training", "encoders", "scst", "data", "images", "threads")
CHECKED = ("decoder", "decoding")  # the benchmarks with a --check
RESULTS = Path(__file__).resolve().parents[1] / "bench_results"


def machine() -> str:
    """A one-line description of where the numbers come from."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"{device}, torch {torch.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("name", choices=[*BENCHMARKS, "all"])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument(
        "--check",
        action="store_true",
        help="check that the references compute our functions, instead of timing (decoder, decoding)",
    )
    parser.add_argument(
        "--decoders",
        help="comma-separated decoders to time (decoder, decoding; default: all of them), "
        "e.g. --decoders attention,updown",
    )
    args = parser.parse_args(argv)
    options = {}
    if args.decoders:
        if args.name not in CHECKED:
            parser.error(f"--decoders: only {', '.join(CHECKED)} time several decoders")
        options["decoders"] = tuple(args.decoders.split(","))
    if args.check:
        names = CHECKED if args.name == "all" else (args.name,)
        if not set(names) <= set(CHECKED):
            parser.error(f"--check: only {', '.join(CHECKED)} have a check")
        return max(importlib.import_module(f"benchmarks.{name}").check() for name in names)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in BENCHMARKS if args.name == "all" else (args.name,):
        module = importlib.import_module(f"benchmarks.{name}")
        start = time.perf_counter()
        result = module.run(quick=args.quick, **options)
        result["machine"] = machine()
        result["seconds"] = round(time.perf_counter() - start, 1)
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        command = f"python -m benchmarks {name}" + (f" --decoders {args.decoders}" * bool(options))
        header = f"<!-- {command}: {result['machine']}; {result['seconds']} s -->\n"
        (args.out / f"{name}.md").write_text(header + result["markdown"].rstrip() + "\n")
        print(f"\n== {name} ({result['seconds']} s) ==\n{result['markdown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
