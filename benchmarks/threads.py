"""Busy-machine benchmark: training steps with another CPU-bound job on the same cores.

Times training steps of the shapes attention model (``python tools/train.py decoder=attention``:
the ``vgg_tiny`` encoder learning, Show-Attend-Tell LSTM, 16 images x 5 captions per batch) in
a fresh process per setting, because OpenMP reads its wait policy when torch loads:

* threads = PyTorch's default (``torch.get_num_threads()``, one per core) with OpenMP's own wait
  policy (GNU libgomp: threads spin between parallel regions) - what runs used before;
* threads = 1;
* threads = one per core available to the process, ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads
  sleep): the project's defaults now (``trainer.threads: null``, :mod:`captioning.openmp`).

Each setting runs on the machine as it is ("idle") and beside a competitor: one process per core
minus one running a busy Python loop (on 2 cores: one competing job, what a second experiment on
a researcher's machine does). Figures: median seconds per training step after a warm-up step,
and the slowdown busy/idle. Each measured process is stopped after a time limit (start-up
excluded) with the steps it finished; one that finished none shows the limit as a lower bound.
``python -m benchmarks threads [--quick]``; ``run(quick)`` returns ``rows`` and ``markdown``.
``python -m benchmarks.threads --measure ROOT THREADS STEPS`` is the measured process.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BATCH = 16
#: (label, trainer.threads (None: torch's default), OMP_WAIT_POLICY (None: unset))
SETTINGS = (
    ("PyTorch default threads, OpenMP's own wait policy (before)", None, None),
    ("1 thread", 1, None),
    ("threads: null, OMP_WAIT_POLICY=PASSIVE (now)", "auto", "PASSIVE"),
)


def measure(root: str, threads: str, steps: int) -> None:
    """Run in a fresh process: print the thread count, then each of up to ``steps`` timed
    training steps' seconds as it ends (one JSON line each; the parent may stop it early)."""
    import torch
    from hydra import compose, initialize_config_dir

    from captioning.data.captions import TokenizedCaptions
    from captioning.devices import configure_torch
    from captioning.distributed import DistContext
    from captioning.models.caption_model import build_model
    from captioning.training import TrainLoop, run_data
    from captioning.training.config import parse_config
    from captioning.training.optim import build_optimizer

    overrides = [f"data.root={root}", "decoder=attention", "trainer=cpu"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        config = parse_config(compose(config_name="train", overrides=overrides))
    configure_torch(torch.device("cpu"), threads=None if threads == "none" else int(threads))
    records = run_data.load_records(config.data, DistContext())["train"]
    tokens = TokenizedCaptions(records)
    vocab = run_data.build_vocabulary(config.data, tokens)
    torch.manual_seed(0)
    model = build_model(config, vocab_size=len(vocab))
    loader = run_data.train_loader(
        config, model, records, vocab, torch.device("cpu"), DistContext(), tokens=tokens
    )
    batches = [batch for _, batch in zip(range(steps + 1), loader, strict=False)]
    loop = TrainLoop(model, build_optimizer(model, lr=1e-3), device=torch.device("cpu"))
    print(json.dumps({"threads": torch.get_num_threads()}), flush=True)
    for k, batch in enumerate(batches):  # the first is a warm-up (allocations, dispatch)
        start = time.perf_counter()
        loop.run_epoch([batch])
        print(
            json.dumps({"warm_up" if k == 0 else "step": time.perf_counter() - start}), flush=True
        )


def _competitors(n: int) -> list[subprocess.Popen]:
    """``n`` processes each running a busy Python loop (one core each)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _child(root: Path, threads: Any, policy: str | None, steps: int, seconds: float) -> dict:
    """Run :func:`measure` in a fresh process, stopped ``seconds`` after its set-up; its
    threads and timed steps (and, when it finished none in time, that lower bound)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    if threads == "auto":
        from captioning.openmp import default_threads

        threads = default_threads()
    argv = [sys.executable, "-m", "benchmarks.threads", "--measure", str(root)]
    argv += ["none" if threads is None else str(threads), str(steps)]
    result: dict[str, Any] = {"threads": None, "step_s": []}
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=errors)
        limit = threading.Timer(600, proc.kill)  # set-up (imports, data): generous
        limit.start()
        ready = time.perf_counter()
        assert proc.stdout is not None
        for line in proc.stdout:
            data = json.loads(line)
            if "threads" in data:  # set up: the time limit for the steps starts now
                limit.cancel()
                limit = threading.Timer(seconds, proc.kill)
                limit.start()
                result["threads"], ready = data["threads"], time.perf_counter()
            result["step_s"] += [data["step"]] if "step" in data else []
        proc.wait()
        limit.cancel()
        errors.seek(0)
        problem = errors.read().decode(errors="replace")[-2000:]
    if result["threads"] is None:
        raise RuntimeError(f"the measured process failed: {problem}")
    if not result["step_s"]:
        result["at_least"] = time.perf_counter() - ready
    return result


def run(quick: bool = False) -> dict[str, Any]:
    """Every setting idle and beside the competitors; see the module doc."""
    from captioning.data.shapes import generate_shapes
    from captioning.openmp import available_cores

    steps, seconds = (3, 15.0) if quick else (8, 25.0)
    cores = available_cores()
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-threads-") as folder:
        root = generate_shapes(Path(folder) / "shapes", train=BATCH * (steps + 1), val=4, test=4)
        for label, threads, policy in SETTINGS:
            row: dict[str, Any] = {"setting": label}
            for scene in ("idle", "busy"):
                rivals = _competitors(max(cores - 1, 1)) if scene == "busy" else []
                try:
                    result = _child(root, threads, policy, steps, seconds)
                finally:
                    for rival in rivals:
                        rival.kill()
                        rival.wait()
                row["threads"] = row.get("threads") or result["threads"]
                times = result["step_s"]
                row[f"{scene}_s"] = round(statistics.median(times), 3) if times else None
                row[f"{scene}_steps"] = len(times)
                row[f"{scene}_over"] = result.get("at_least")
            if row["idle_s"] and row["busy_s"]:
                row["slowdown"] = round(row["busy_s"] / row["idle_s"], 1)
            rows.append(row)
    return {"rows": rows, "markdown": _markdown(rows, cores, load, seconds)}


def _markdown(rows: list[dict], cores: int, load: float, seconds: float) -> str:
    lines = [
        "| setting | torch threads | idle (s/step) | beside a busy job (s/step) | slowdown |",
        "|---|---|---|---|---|",
    ]

    def cell(r: dict, scene: str) -> str:
        if r[f"{scene}_s"] is not None:
            return f"{r[scene + '_s']:.3f} ({r[scene + '_steps']} steps)"
        return f"> {r[scene + '_over']:.0f} (no step done in time)"

    for r in rows:
        slowdown = f"{r['slowdown']:.1f}x" if "slowdown" in r else "-"
        lines.append(
            f"| {r['setting']} | {r['threads'] or '?'} | {cell(r, 'idle')} | {cell(r, 'busy')} "
            f"| {slowdown} |"
        )
    lines.append(
        f"\nShapes attention model (`decoder=attention`), batch {BATCH} images x 5 captions, "
        f"median seconds per training step after a warm-up step, one fresh process per setting "
        f"stopped {seconds:.0f} s after its set-up; busy: "
        f"{max(cores - 1, 1)} busy-loop process(es) beside it on this machine's {cores} "
        f"core(s). Load average when the run started: {load:.1f}."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--measure":
        measure(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        print(
            "usage: python -m benchmarks threads [--quick]  (python -m benchmarks.threads is its child)"
        )
        sys.exit(2)
