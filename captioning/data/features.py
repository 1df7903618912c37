"""On-disk cache of a frozen encoder's features: encode every image once, train the decoder from it.

Kept as one file (about 420 lines): building the cache, its key and the dataset that reads it
share one on-disk format.

When the encoder is frozen and training uses no image augmentation, every epoch would compute
the same ``vector`` and ``grid`` for each image. :func:`build_feature_cache` computes them once
and stores them as float16 memory-mapped ``.npy`` files; :class:`FeatureCaptionDataset` then
yields ``(EncoderOutput, [caption ids], image id)`` items, so the training batch carries
features instead of images and the model skips its encoder.

One cache folder per *fingerprint*: a hash of the encoder's config, of its state dict (weights
and buffers), of the image list (ids, paths, and each file's size and modification time, as
build tools key their caches), of the annotation files' contents and of the preprocessing.
Change any of them (regenerating a data set in the same folder included) and a new cache is
built; nothing stale is ever read. A build writes rows in order and records how
many rows are safely on disk after every chunk (``progress.json``), so an interrupted build
continues where it stopped.

Layout of ``<cache_dir>/<fingerprint[:20]>-<parts>/``: ``vector.npy`` (N, D_v), ``grid.npy``
(N, L, D_g) when the grid is cached, ``meta.json`` (fingerprint, shapes, image ids) and
``progress.json`` (``{"done": rows, "complete": bool}``, and ``"skipped": {image id: reason}``).

An image that cannot be read while the cache is built gets a zero row and is listed under
``skipped``; :class:`FeatureCaptionDataset` then yields a :class:`~captioning.data.coco.SkippedImage`
for it, which training drops and counts like an unreadable image file; fixing the file changes its
size or modification time, and with it the fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from captioning.contracts import EncoderOutput
from captioning.data.datasets import ImageDataset, PerImageCaptions, decode_min_side
from captioning.data.images import MAX_PIXELS, ImageLoadError, load_image
from captioning.data.loader import collate_images
from captioning.data.records import ImageRecord, SkippedImage
from captioning.errors import CaptioningError
from captioning.io import write_text_atomic
from captioning.vocab import Vocabulary

__all__ = [
    "CACHE_VERSION",
    "FeatureCaptionDataset",
    "FeatureStore",
    "build_feature_cache",
    "fingerprint",
    "state_dict_hash",
    "use_feature_cache",
]

log = logging.getLogger(__name__)

CACHE_VERSION = 1
_FLUSH_SECONDS = 30.0  # at most this much work is lost when a build is killed


def use_feature_cache(
    setting: str | bool, *, frozen: bool, fine_tuning: bool, augment: bool
) -> bool:
    """Decide whether to train from the feature cache.

    Args:
        setting: ``data.feature_cache``: ``"auto"``, ``True``/``"true"`` or ``False``/``"false"``.
        frozen: the encoder never learns (``encoder.trainable=false``).
        fine_tuning: encoder fine-tuning is scheduled (``trainer.finetune_encoder_after``).
        augment: training images are randomly augmented.

    Returns:
        ``True`` to train from cached features.

    Raises:
        CaptioningError: the cache was forced on where features change from epoch to epoch.
    """
    value = str(setting).lower()
    if value not in ("auto", "true", "false"):
        raise CaptioningError(f"data.feature_cache={setting!r}: use auto, true or false")
    possible = frozen and not fine_tuning and not augment
    if value == "true" and not possible:
        raise CaptioningError(
            "data.feature_cache=true needs a frozen encoder (encoder.trainable=false), no "
            "trainer.finetune_encoder_after and data.augment=false; use data.feature_cache=auto"
        )
    return value != "false" and possible


def state_dict_hash(module: nn.Module) -> str:
    """SHA-256 over a module's state dict: key names, dtypes, shapes and raw bytes."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)  # (numel,)
        digest.update(f"{key}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy())  # raw bytes of any dtype
    return digest.hexdigest()


def _file_key(path: Path) -> str:
    """What identifies a file's contents without reading it: size and modification time."""
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def fingerprint(
    encoder: nn.Module,
    encoder_config: Mapping[str, Any],
    records: Sequence[ImageRecord],
    preprocess: Any,
    sources: Sequence[str | os.PathLike] = (),
) -> str:
    """The cache key: encoder config + architecture and grid side + weights + images (paths,
    sizes, modification times) + annotation files (contents) + preprocessing.

    Args:
        encoder: the (frozen) encoder whose outputs are cached.
        encoder_config: its config node (plain mapping).
        records: the images, in cache row order.
        preprocess: the encoder's input contract (a dataclass, e.g. ``encoder.preprocess``).
        sources: the annotation files the records come from (hashed whole).

    Returns:
        A hex digest.
    """
    digest = hashlib.sha256(f"captioning-features-v{CACHE_VERSION}".encode())
    digest.update(json.dumps(dict(encoder_config), sort_keys=True, default=str).encode())
    digest.update(state_dict_hash(encoder).encode())
    # what the config may leave to builder defaults: the architecture and the pooled grid's side
    shape = {k: getattr(encoder, k) for k in ("arch", "grid_side") if hasattr(encoder, k)}
    if shape:  # (VGG encoders have neither: their keys stay as they were)
        digest.update(json.dumps(shape, sort_keys=True).encode())
    prep = asdict(preprocess) if hasattr(preprocess, "__dataclass_fields__") else repr(preprocess)
    digest.update(json.dumps(prep, sort_keys=True, default=str).encode())
    for record in records:
        digest.update(
            f"{record.image_id}\t{record.path}\t{_file_key(Path(record.path))}\n".encode()
        )
    for source in sources:
        with open(source, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


class FeatureStore:
    """Read access to a complete cache folder (memory-mapped; opened lazily in each process).

    Args:
        folder: a cache folder written by :func:`build_feature_cache`.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        progress = json.loads((self.folder / "progress.json").read_text())
        if not progress.get("complete"):
            raise CaptioningError(f"feature cache {self.folder} is incomplete; rebuild it")
        self.image_ids: list[int] = list(self.meta["image_ids"])
        #: image id -> why its image could not be read (its row holds zeros)
        self.skipped: dict[int, str] = {int(k): v for k, v in progress.get("skipped", {}).items()}
        self.has_grid = "grid" in self.meta["parts"]
        self._arrays: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.image_ids)

    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = {
                part: np.load(self.folder / f"{part}.npy", mmap_mode="r")
                for part in self.meta["parts"]
            }
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:  # workers reopen the files instead of copying them
        return {**self.__dict__, "_arrays": None}

    def __getitem__(self, row: int) -> EncoderOutput:
        """Row `row` as float16 tensors: vector (D_v,), grid (L, D_g) or (0, D_g) if not cached."""
        arrays = self._open()
        vector = torch.from_numpy(np.array(arrays["vector"][row]))  # (D_v,) a private copy
        if self.has_grid:
            grid = torch.from_numpy(np.array(arrays["grid"][row]))  # (L, D_g)
        else:
            grid = torch.zeros(0, int(self.meta["grid_dim"]), dtype=vector.dtype)  # (0, D_g)
        return EncoderOutput(vector, grid)


class FeatureCaptionDataset(PerImageCaptions):
    """Training view over cached features: item i is (EncoderOutput of image i, [caption ids], id).

    Args:
        store: the cache, built from the same `records` in the same order.
        records: the images and their captions.
        vocab: maps words to ids.
        **captions: ``max_len``, ``tokens``, ``captions_per_image``, ``seed``
            (:class:`~captioning.data.datasets.PerImageCaptions`).
    """

    def __init__(
        self,
        store: FeatureStore,
        records: Sequence[ImageRecord],
        vocab: Vocabulary,
        **captions: Any,
    ) -> None:
        super().__init__(records, vocab, **captions)
        if [r.image_id for r in self.records] != store.image_ids:
            raise CaptioningError(f"feature cache {store.folder} was built for other images")
        self.store = store

    def _input(self, index: int) -> EncoderOutput | SkippedImage:
        image_id = self.records[index].image_id
        if image_id in self.store.skipped:
            return SkippedImage(image_id, self.store.skipped[image_id])
        return self.store[index]


def _folder(cache_dir: Path, key: str, with_grid: bool) -> Path:
    return cache_dir / f"{key[:20]}-{'vector+grid' if with_grid else 'vector'}"


def _complete(folder: Path, key: str) -> bool:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        done = json.loads((folder / "progress.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("fingerprint") == key and bool(done.get("complete"))


@torch.no_grad()
def build_feature_cache(
    cache_dir: str | os.PathLike,
    encoder: nn.Module,
    records: Sequence[ImageRecord],
    transform: Callable,
    *,
    encoder_config: Mapping[str, Any],
    with_grid: bool = True,
    batch_size: int = 64,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
    max_pixels: int | None = MAX_PIXELS,
    sources: Sequence[str | os.PathLike] = (),
) -> FeatureStore | None:
    """Return the cache of `encoder`'s outputs on `records`, computing what is missing.

    Args:
        cache_dir: the root of all caches (``data.cache_dir``).
        encoder: the frozen encoder (put in eval mode here).
        records: the images, in row order.
        transform: PIL -> tensor, the encoder's deterministic evaluation transform.
        encoder_config: the encoder's config node (part of the fingerprint).
        with_grid: also cache the grid (attention decoders need it; VGG-16 at 224 px: 196x512
            float16 = 200 KB per image).
        batch_size: images per encoder batch.
        num_workers: loader workers decoding images.
        device: where the encoder runs.
        channels_last: feed the encoder channels-last images.
        progress: show a tqdm bar.
        should_stop: polled between batches; ``True`` stops the build (resumable later).
        max_pixels: larger images are skipped like unreadable ones.
        sources: the annotation files the records come from (part of the fingerprint).

    Returns:
        The complete cache, or ``None`` when `should_stop` interrupted the build.
    """
    cache_dir = Path(cache_dir)
    key = fingerprint(encoder, encoder_config, records, encoder.preprocess, sources)
    for candidate in (_folder(cache_dir, key, True), _folder(cache_dir, key, with_grid)):
        if _complete(candidate, key):
            log.info("feature cache: using %s", candidate)
            return FeatureStore(candidate)
    folder = _folder(cache_dir, key, with_grid)
    folder.mkdir(parents=True, exist_ok=True)
    parts = ("vector", "grid") if with_grid else ("vector",)
    device = torch.device(device)
    encoder.eval()
    probe = encoder(_first_image(records, transform, max_pixels).to(device))  # (1, ...) shapes
    shapes = {
        "vector": (len(records), probe.vector.shape[1]),
        "grid": (len(records), *probe.grid.shape[1:]),
    }
    meta = {
        "version": CACHE_VERSION,
        "fingerprint": key,
        "parts": list(parts),
        "grid_dim": int(probe.grid.shape[2]),
        "dtype": "float16",
        "shapes": {p: shapes[p] for p in parts},
        "image_ids": [r.image_id for r in records],
    }
    done, skipped = 0, {}
    if _same_meta(folder, meta):
        state = json.loads((folder / "progress.json").read_text())
        done, skipped = int(state.get("done", 0)), dict(state.get("skipped", {}))
        log.info(
            "feature cache: resuming the build of %s at image %d/%d", folder, done, len(records)
        )
    else:
        write_text_atomic(folder / "progress.json", json.dumps({"done": 0, "complete": False}))
        for part in parts:
            np.lib.format.open_memmap(
                folder / f"{part}.npy", mode="w+", dtype=np.float16, shape=shapes[part]
            ).flush()
        write_text_atomic(folder / "meta.json", json.dumps(meta))
        log.info("feature cache: encoding %d images into %s", len(records), folder)
    arrays = {p: np.load(folder / f"{p}.npy", mmap_mode="r+") for p in parts}
    loader = DataLoader(
        ImageDataset(records[done:], transform, max_pixels=max_pixels),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_images,
        pin_memory=device.type == "cuda",
    )
    bar = tqdm(
        total=len(records),
        initial=done,
        desc="caching features",
        unit="img",
        disable=not progress,
        dynamic_ncols=True,
    )
    last_flush, row = time.monotonic(), done
    row_of = {r.image_id: k for k, r in enumerate(records)}
    for batch in loader:
        if should_stop is not None and should_stop():
            break
        for item in batch.skipped:  # unreadable: its row stays zero
            log.warning("feature cache: %s; left out of training", item.reason)
            skipped[str(item.image_id)] = item.reason
        if batch.image_ids.numel():
            images = batch.images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            out = encoder(images)
            rows = np.array([row_of[i] for i in batch.image_ids.tolist()])  # (n,)
            arrays["vector"][rows] = _half(out.vector)
            if with_grid:
                arrays["grid"][rows] = _half(out.grid)
        n = len(batch.image_ids) + len(batch.skipped)
        row += n
        bar.update(n)
        if time.monotonic() - last_flush > _FLUSH_SECONDS:
            _commit(folder, arrays, row, complete=False, skipped=skipped)
            last_flush = time.monotonic()
    bar.close()
    complete = row == len(records)
    _commit(folder, arrays, row, complete=complete, skipped=skipped)
    if not complete:
        log.warning(
            "feature cache: build stopped at image %d/%d; it resumes on the next run",
            row,
            len(records),
        )
        return None
    return FeatureStore(folder)


def _first_image(
    records: Sequence[ImageRecord], transform: Callable, max_pixels: int | None
) -> Tensor:
    """The first readable image as a batch of one (to probe the encoder's output shapes)."""
    if not records:
        raise CaptioningError("cannot cache features of an empty image list")
    min_side = decode_min_side(transform)  # as the cache's loader decodes them
    for record in records[:100]:
        try:
            image = load_image(record.path, max_pixels=max_pixels, min_side=min_side)
            return transform(image).unsqueeze(0)
        except ImageLoadError:
            continue
    raise CaptioningError(
        f"none of the first {min(len(records), 100)} images can be read (e.g. {records[0].path}); "
        "check the image folder"
    )


def _half(x: Tensor) -> np.ndarray:
    """float16 numpy copy, clamped to float16's finite range."""
    return x.float().clamp(-65504.0, 65504.0).cpu().numpy().astype(np.float16)


def _same_meta(folder: Path, meta: dict) -> bool:
    """A partial build of the same cache is on disk (so it can be resumed)."""
    try:
        old = json.loads((folder / "meta.json").read_text())
        json.loads((folder / "progress.json").read_text())
    except (OSError, ValueError):
        return False
    shapes_ok = all((folder / f"{p}.npy").is_file() for p in meta["parts"])
    return shapes_ok and json.loads(json.dumps(meta)) == old


def _commit(
    folder: Path, arrays: dict[str, np.ndarray], done: int, *, complete: bool, skipped: dict
) -> None:
    """Flush the rows written so far, then record how many there are (and which were skipped)."""
    for array in arrays.values():
        array.flush()
    state = {"done": done, "complete": complete, **({"skipped": skipped} if skipped else {})}
    write_text_atomic(folder / "progress.json", json.dumps(state))
