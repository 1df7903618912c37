"""Data start-up benchmark: what a COCO-scale run costs before its first training batch.

Writes synthetic annotation files of MS-COCO's real size (123,287 images, 616,767 captions) in
both schemas - Karpathy's split file (``dataset_coco.json``: train 82,783 + restval 30,504, val
5,000, test 5,000, with the ``tokens``/``sentids`` fields of the real file) and the official
2014 files (``captions_train2014.json`` / ``captions_val2014.json``) - with captions of COCO's
length and a Zipf vocabulary, and one image file per image id that is a hard link to one of a
few small JPEGs. Then, for ``data=coco_karpathy`` and ``data=coco``, a fresh process (so time
and peak RSS count from process start) composes the training config and does what
``Trainer.fit`` does before its first step, timing each phase:

1. start-up: the interpreter and the library's imports;
2. annotations: ``training.run_data.load_records`` (train and val: read, validate, check that
   every image file exists);
3. vocabulary: the training captions tokenized once (``data.captions.TokenizedCaptions``) and
   ``training.run_data.build_vocabulary`` (min count 5);
4. model: the default ``vgg_tiny`` + LSTM;
5. datasets: ``training.run_data.train_loader`` (the same tokens encoded) and the validation
   loader;
6. first batch: the training loader's first batch (16 images with their captions, no workers).

``python -m benchmarks data [--quick]`` (``--quick``: 2,000 images); ``run(quick)`` returns
``rows`` and ``markdown``. ``python -m benchmarks.data --measure DATA ROOT T0`` is the
measured process.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: MS-COCO 2014: images per file and Karpathy split; captions in all
COCO_IMAGES = {"train2014": 82_783, "val2014": 40_504}
KARPATHY_VAL, KARPATHY_TEST = 5_000, 5_000
COCO_CAPTIONS = 616_767
DATASETS = {"coco_karpathy": "Karpathy split file", "coco": "official 2014 files"}
TARGET_SECONDS, TARGET_GB = 30.0, 3.0
PHASES = ("start-up", "annotations", "vocabulary", "model", "datasets", "first batch")


# -- the synthetic COCO ---------------------------------------------------------------------------


def _words(rng: Any, n: int) -> list[str]:
    """`n` distinct lower-case words of 2-9 letters."""
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [
        12,
        9,
        8,
        8,
        7,
        7,
        6,
        6,
        6,
        4,
        4,
        3,
        3,
        2,
        2,
        2,
        2,
        2,
        2,
        1.5,
        1,
        0.8,
        0.2,
        0.2,
        0.1,
        0.1,
    ]
    p = [w / sum(weights) for w in weights]
    words: dict[str, None] = {}
    while len(words) < n:
        size = int(rng.integers(2, 10))
        words["".join(rng.choice(list(letters), size=size, p=p))] = None
    return list(words)


def _captions(n: int, seed: int) -> list[str]:
    """`n` captions of COCO's length (8-18 words, mean about 10.5) over a Zipf vocabulary of
    27,000 words (COCO's raw vocabulary size; about 10,000 are seen 5 times or more)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = np.array(_words(rng, 27_000), dtype=object)
    ranks = np.arange(1, len(vocab) + 1)
    p = 1.0 / ranks**1.4
    lengths = np.clip(rng.poisson(9.5, n) + 2, 8, 18)
    words = vocab[rng.choice(len(vocab), size=int(lengths.sum()), p=p / p.sum())]
    ends = np.cumsum(lengths)
    out, start = [], 0
    for k, end in enumerate(ends.tolist()):
        text = " ".join(words[start:end])
        start = end
        out.append(text.capitalize() + ("." if k % 3 else " ."))
    return out


def _image_files(root: Path, sizes: dict[str, int], seed: int) -> dict[str, list[str]]:
    """One JPEG per image of each 2014 folder: hard links to a few small files."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    sources = []
    for k in range(8):
        path = root / f"source_{k}.jpg"
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
        sources.append(path)
    names: dict[str, list[str]] = {}
    image_id = 1
    for folder, count in sizes.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        names[folder] = []
        for k in range(count):
            name = f"COCO_{folder}_{image_id:012d}.jpg"
            os.link(sources[k % len(sources)], root / folder / name)
            names[folder].append(name)
            image_id += 1
    return names


def write_synthetic_coco(root: Path, *, scale: float = 1.0, seed: int = 0) -> dict[str, int]:
    """COCO-sized annotation files in both schemas, and linked image files, under `root`.

    Args:
        root: the data folder (``data.root``).
        scale: fraction of COCO's size (1.0: 123,287 images, 616,767 captions).
        seed: seeds the captions and pixels.

    Returns:
        The number of images and captions written.
    """
    sizes = {k: max(round(v * scale), 3) for k, v in COCO_IMAGES.items()}
    names = _image_files(root, sizes, seed)
    n_images = sum(sizes.values())
    n_captions = max(round(COCO_CAPTIONS * scale), 5 * n_images)
    captions = _captions(n_captions, seed)
    per_image = [5] * n_images  # COCO: 5 captions each, a few images 6 or 7
    for k in range(n_captions - 5 * n_images):
        per_image[k * 97 % n_images] += 1
    val, test = (max(round(n * scale), 1) for n in (KARPATHY_VAL, KARPATHY_TEST))
    official: dict[str, dict[str, list]] = {f: {"images": [], "annotations": []} for f in sizes}
    karpathy, image_id, sent_id = [], 1, 0
    for folder, files in names.items():
        for k, name in enumerate(files):
            if folder == "train2014":
                split = "train"
            else:
                split = "val" if k < val else "test" if k < val + test else "restval"
            official[folder]["images"].append(
                {
                    "license": 1,
                    "file_name": name,
                    "coco_url": f"http://images.cocodataset.org/{folder}/{name}",
                    "height": 480,
                    "width": 640,
                    "date_captured": "2013-11-14 16:28:13",
                    "flickr_url": "http://farm4.staticflickr.com/0000/000000000_0000000000_z.jpg",
                    "id": image_id,
                }
            )
            sentences = []
            for _ in range(per_image[image_id - 1]):
                raw = captions[sent_id]
                sent_id += 1
                official[folder]["annotations"].append(
                    {"image_id": image_id, "id": sent_id, "caption": raw}
                )
                tokens = raw.lower().rstrip(" .").split()
                sentences.append(
                    {"tokens": tokens, "raw": raw, "imgid": image_id - 1, "sentid": sent_id - 1}
                )
            karpathy.append(
                {
                    "filepath": folder,
                    "sentids": [s["sentid"] for s in sentences],
                    "filename": name,
                    "imgid": image_id - 1,
                    "split": split,
                    "sentences": sentences,
                    "cocoid": image_id,
                }
            )
            image_id += 1
    (root / "annotations").mkdir(exist_ok=True)
    info = {"description": "synthetic COCO-sized captions (benchmarks/data.py)"}
    for folder, data in official.items():
        path = root / "annotations" / f"captions_{folder}.json"
        path.write_text(json.dumps({"info": info, "licenses": [], **data}))
    (root / "dataset_coco.json").write_text(json.dumps({"images": karpathy, "dataset": "coco"}))
    return {"images": n_images, "captions": sent_id}


# -- the measured process -------------------------------------------------------------------------


def _peak_gb() -> float:
    """This process's peak resident memory (VmHWM: ru_maxrss would include the parent's, since
    it survives exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def measure(data: str, root: str, t0: float) -> dict[str, Any]:
    """Run in a fresh process: the phases of a training run's start, each with the time since
    `t0` (when the parent started this process) and the peak RSS so far."""
    marks: list[dict[str, Any]] = []

    def mark(phase: str) -> None:
        cpu = sum(os.times()[:2])  # user + system time of this process (robust to other load)
        marks.append({"phase": phase, "at": time.time() - t0, "cpu": cpu, "peak_gb": _peak_gb()})

    import torch
    from hydra import compose, initialize_config_dir

    from captioning.data.captions import TokenizedCaptions
    from captioning.data.loader import build_eval_loader, start_epoch
    from captioning.data.transforms import eval_transform
    from captioning.distributed import DistContext
    from captioning.models.caption_model import build_model
    from captioning.training import run_data
    from captioning.training.config import parse_config

    torch.set_num_threads(1)
    mark("start-up")
    overrides = [f"data={data}", f"data.root={root}", "data.feature_cache=false", "trainer=cpu"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        config = parse_config(compose(config_name="train", overrides=overrides))
    ctx, device = DistContext(), torch.device("cpu")
    records = run_data.load_records(config.data, ctx)
    mark("annotations")
    tokens = TokenizedCaptions(records["train"])
    vocab = run_data.build_vocabulary(config.data, tokens)
    mark("vocabulary")
    model = build_model(config, vocab_size=len(vocab))
    mark("model")
    loader = run_data.train_loader(
        config, model, records["train"], vocab, device, ctx, tokens=tokens
    )
    build_eval_loader(records["val"], eval_transform(model.encoder.preprocess))
    mark("datasets")
    start_epoch(loader, 1)
    batch = next(iter(loader))
    mark("first batch")
    return {
        "marks": marks,
        "train_images": len(records["train"]),
        "train_captions": sum(len(r.captions) for r in records["train"]),
        "val_images": len(records["val"]),
        "vocab": len(vocab),
        "batch": [int(batch.images.shape[0]), int(batch.captions.shape[0])],
    }


def _measured_run(data: str, root: Path) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "benchmarks.data",
        "--measure",
        data,
        str(root),
        repr(time.time()),
    ]
    out = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"measured run of data={data} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _load() -> str:
    try:
        return "load average " + " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def run(quick: bool) -> dict[str, Any]:
    """Write the synthetic COCO (``quick``: 2,000 images), measure both schemas."""
    scale = 2_000 / sum(COCO_IMAGES.values()) if quick else 1.0
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        start = time.perf_counter()
        written = write_synthetic_coco(Path(tmp), scale=scale)
        write_seconds = time.perf_counter() - start
        load_before = _load()
        results = {data: _measured_run(data, Path(tmp)) for data in DATASETS}
        sizes = {
            name: (Path(tmp) / name).stat().st_size / 1e6
            for name in (
                "dataset_coco.json",
                "annotations/captions_train2014.json",
                "annotations/captions_val2014.json",
            )
        }
    load_after = _load()
    rows = []
    for data, result in results.items():
        previous = 0.0
        for mark in result["marks"]:
            rows.append(
                {
                    "data": data,
                    "phase": mark["phase"],
                    "seconds": round(mark["at"] - previous, 2),
                    "since_start": round(mark["at"], 2),
                    "cpu_since_start": round(mark["cpu"], 2),
                    "peak_rss_gb": round(mark["peak_gb"], 2),
                }
            )
            previous = mark["at"]
    lines = [
        f"Synthetic COCO: {written['images']:,} images, {written['captions']:,} captions "
        f"(dataset_coco.json {sizes['dataset_coco.json']:.0f} MB; captions_train2014.json "
        f"{sizes['annotations/captions_train2014.json']:.0f} MB + captions_val2014.json "
        f"{sizes['annotations/captions_val2014.json']:.0f} MB), written in {write_seconds:.0f} s. "
        f"Each data set measured in a fresh process, one torch thread, no loader workers; "
        f"{load_before} before, {load_after} after, on {os.cpu_count()} cores (wall-clock "
        "times grow with other load; CPU times much less).",
        "",
        "| data | phase | seconds | since process start (s) | CPU since start (s) | "
        "peak RSS (GB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| `{r['data']}` | {r['phase']} | {r['seconds']:.2f} | {r['since_start']:.2f} | "
        f"{r['cpu_since_start']:.2f} | {r['peak_rss_gb']:.2f} |"
        for r in rows
    ]
    lines.append("")
    for data, result in results.items():
        first = result["marks"][-1]
        met = first["at"] <= TARGET_SECONDS and first["peak_gb"] <= TARGET_GB
        lines.append(
            f"- `data={data}` ({DATASETS[data]}): {result['train_images']:,} training images "
            f"({result['train_captions']:,} captions), {result['val_images']:,} validation "
            f"images, vocabulary {result['vocab']:,}; first batch ({result['batch'][0]} images, "
            f"{result['batch'][1]} captions) {first['at']:.1f} s after process start "
            f"({first['cpu']:.1f} s of CPU), peak RSS "
            f"{first['peak_gb']:.2f} GB: target <= {TARGET_SECONDS:.0f} s and "
            f"<= {TARGET_GB:.0f} GB {'met' if met else 'missed'}"
            + (" (quick run: 2,000 images)" if quick else "")
        )
    return {"rows": rows, "results": results, "markdown": "\n".join(lines) + "\n"}


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--measure":
        print(json.dumps(measure(sys.argv[2], sys.argv[3], float(sys.argv[4]))))
    else:
        sys.exit(f"usage: python -m benchmarks data [--quick]  ({__doc__.splitlines()[0]})")
