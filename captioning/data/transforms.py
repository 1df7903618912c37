"""Image preprocessing: the encoder's input contract and the PIL -> tensor pipelines.

An encoder carries a :class:`Preprocess` (sizes and normalisation, read from its weights'
metadata when it has pretrained weights) and the data pipeline builds its transforms from it
with :func:`eval_transform` / :func:`train_transform`, so the two can never disagree.

The pipelines are :class:`ImageTransform` objects: besides mapping an image to a tensor they tell
the loader the smallest image they need (``decode_min_side``), so a COCO-sized JPEG can be decoded
at reduced scale (:func:`captioning.data.images.load_image`), and their resize maps such an image
exactly like the full-size one (same output size, same geometry; only the resampling differs).

Augmentation is deliberately conservative: captions describe positions ("a red square left of
a blue circle") and colours, so there is no horizontal flip and no hue jitter by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import PIL.Image
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.models import WeightsEnum
from torchvision.transforms import InterpolationMode, v2

from captioning.data.images import reduced_decode, to_rgb
from captioning.errors import CaptioningError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageTransform",
    "Preprocess",
    "eval_transform",
    "imagenet_preprocess",
    "preprocess_from_weights",
    "train_transform",
]

#: ImageNet channel statistics: the project's single copy, used only when no weights metadata
#: supplies them (random init, local state-dict files, ``vgg_tiny``).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
_RESIZE_RATIO = 256 / 224  # torchvision recipe: shorter side to 256, center crop 224


@dataclass(frozen=True)
class Preprocess:
    """What an encoder expects from its input images.

    Attributes:
        resize_size: Shorter side is resized to this before the center crop (``crop=True``).
            Ignored when ``crop=False``.
        crop_size: Side of the square image the network sees.
        mean: Per-channel mean subtracted after scaling pixels to ``[0, 1]``.
        std: Per-channel standard deviation divided by after subtracting ``mean``.
        crop: ``True``: resize the shorter side to ``resize_size`` and center-crop
            ``crop_size`` (the torchvision classification recipe). ``False``: resize the whole
            image to ``crop_size x crop_size`` (aspect ratio not kept, nothing cut off).
    """

    resize_size: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop: bool = True

    def __post_init__(self) -> None:
        # lists (from YAML / JSON checkpoints) become tuples so instances stay hashable
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if self.crop_size < 1 or self.resize_size < 1:
            raise CaptioningError(
                f"Preprocess sizes must be positive, got resize_size={self.resize_size}, "
                f"crop_size={self.crop_size}; fix the image size in the config"
            )
        if self.crop and self.resize_size < self.crop_size:
            raise CaptioningError(
                f"Preprocess resize_size={self.resize_size} is smaller than "
                f"crop_size={self.crop_size}; use resize_size >= crop_size or crop=False"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise CaptioningError(
                f"Preprocess needs 3 means and 3 positive stds, got mean={self.mean}, "
                f"std={self.std}; fix the normalisation settings"
            )


def preprocess_from_weights(
    weights: WeightsEnum, image_size: int | None = None, *, crop: bool = True
) -> Preprocess:
    """Read sizes and mean/std from torchvision weights' ``transforms()`` (no download).

    Args:
        weights: A torchvision weights enum member, e.g. ``VGG16_Weights.IMAGENET1K_V1``.
        image_size: Crop size to use instead of the weights' one; the resize size is scaled
            by the same factor (448 -> 512). ``None`` keeps the weights' sizes.
        crop: ``False``: resize the whole image to the crop size, square (nothing cut off; the
            Show-Attend-Tell tutorial's 256 x 256 images), keeping the weights' mean/std.

    Returns:
        The :class:`Preprocess` matching those weights.
    """
    tf = weights.transforms()
    side, resize = int(tf.crop_size[0]), int(tf.resize_size[0])
    if image_size is not None and image_size != side:
        resize, side = round(image_size * resize / side), image_size
    if not crop:
        resize = side
    return Preprocess(resize_size=resize, crop_size=side, mean=tf.mean, std=tf.std, crop=crop)


def imagenet_preprocess(image_size: int, *, crop: bool = True) -> Preprocess:
    """ImageNet mean/std at ``image_size``: the default when no weights metadata exists.

    Args:
        image_size: Side of the square network input.
        crop: ``True``: resize the shorter side to ``image_size * 256 / 224`` and center-crop
            (torchvision recipe); ``False``: resize the whole image to ``image_size`` square.

    Returns:
        The :class:`Preprocess`.
    """
    resize = round(image_size * _RESIZE_RATIO) if crop else image_size
    return Preprocess(resize, image_size, IMAGENET_MEAN, IMAGENET_STD, crop=crop)


class _ToRGB:
    """Transform step: any PIL mode -> RGB (grayscale, alpha over white, CMYK, 16-bit)."""

    def __call__(self, image: PIL.Image.Image) -> PIL.Image.Image:
        return image if image.mode == "RGB" else to_rgb(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _Resize:
    """``v2.Resize(size)`` (bilinear, antialiased) that also resizes a reduced-size JPEG decode
    as if it were the full-size image: the output size is computed from the full size, and only
    the part of the reduced image that holds the picture is resampled (``box``)."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = size
        self.plain = v2.Resize(size, interpolation=InterpolationMode.BILINEAR, antialias=True)

    def __call__(self, image: PIL.Image.Image | Tensor) -> PIL.Image.Image | Tensor:
        reduced = reduced_decode(image) if isinstance(image, PIL.Image.Image) else None
        if reduced is None:
            return self.plain(image)
        width, height = reduced.source_size
        if isinstance(self.size, int):  # shorter side to size, as torchvision computes it
            short, long = sorted((width, height))
            other = int(self.size * long / short)
            out = (self.size, other) if width <= height else (other, self.size)
        else:
            out = (self.size[1], self.size[0])
        return image.resize(out, PIL.Image.Resampling.BILINEAR, box=reduced.box)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


class ImageTransform(v2.Compose):
    """A PIL image -> tensor pipeline that knows the smallest image it needs.

    A deterministic pipeline (no augmentation) is also two halves, :meth:`pixels` (PIL image ->
    the resized ``uint8`` tensor) and :meth:`finish` (-> normalised float), so that
    :class:`~captioning.data.image_cache.ImageCache` can keep the first half's output:
    ``transform(image)`` equals ``transform.finish(transform.pixels(image))`` exactly.

    Attributes:
        decode_min_side: Both sides of the image before the first resize must be at least this
            for the resize to only shrink (the resize size with ``crop``, else the crop size);
            :func:`~captioning.data.images.load_image` takes it as ``min_side``.
        output_size: ``(3, side, side)``, the shape of every output.
        deterministic: the same image always gives the same tensor (no random step).
    """

    def __init__(
        self,
        steps: list[Callable],
        decode_min_side: int,
        *,
        output_side: int,
        pixel_steps: int | None = None,
    ) -> None:
        """Args:
        steps: the pipeline.
        decode_min_side: see the class attributes.
        output_side: the side of the square output.
        pixel_steps: for a deterministic pipeline, how many leading steps make the resized
            ``uint8`` tensor (the rest only convert and normalise it); None: not deterministic.
        """
        super().__init__(steps)
        self.decode_min_side = decode_min_side
        self.output_size = (3, output_side, output_side)
        self.deterministic = pixel_steps is not None
        self._split = pixel_steps

    def pixels(self, image: PIL.Image.Image) -> Tensor:
        """The resized image as a ``(3, side, side)`` ``uint8`` tensor (deterministic only)."""
        if self._split is None:
            raise CaptioningError("pixels() needs a deterministic transform (no augmentation)")
        for step in self.transforms[: self._split]:
            image = step(image)
        return image.as_subclass(Tensor)

    def finish(self, pixels: Tensor) -> Tensor:
        """``uint8`` pixels from :meth:`pixels` -> the normalised float tensor."""
        out = tv_tensors.Image(pixels)
        for step in self.transforms[self._split :]:
            out = step(out)
        return out.as_subclass(Tensor)


def _min_side(pre: Preprocess) -> int:
    """The smallest side the resize of ``pre`` needs so that it never enlarges."""
    return pre.resize_size if pre.crop else pre.crop_size


def _resize(pre: Preprocess) -> list[Callable]:
    """The deterministic geometry shared by eval and un-augmented training."""
    if pre.crop:
        return [_Resize(pre.resize_size), v2.CenterCrop(pre.crop_size)]
    return [_Resize((pre.crop_size, pre.crop_size))]


def _to_tensor(pre: Preprocess) -> list[Callable]:
    """``uint8`` image tensor (3, H, W) -> float in [0, 1] -> normalised."""
    return [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(pre.mean), std=list(pre.std)),
    ]


def eval_transform(pre: Preprocess) -> ImageTransform:
    """Deterministic PIL image -> normalised tensor transform for evaluation and inference.

    Converts the image to RGB first (see :func:`captioning.data.images.to_rgb`), then either
    resizes the shorter side to ``pre.resize_size`` and center-crops ``pre.crop_size``
    (``pre.crop=True``) or resizes the whole image to ``pre.crop_size`` square
    (``pre.crop=False``), then scales to ``[0, 1]`` and normalises with ``pre.mean``/``pre.std``.

    Args:
        pre: The encoder's preprocessing contract (``encoder.preprocess``).

    Returns:
        A callable mapping a PIL image to a float tensor of shape ``(3, crop_size, crop_size)``.
    """
    steps = [_ToRGB(), *_resize(pre), v2.ToImage()]
    return ImageTransform(
        [*steps, *_to_tensor(pre)],
        _min_side(pre),
        output_side=pre.crop_size,
        pixel_steps=len(steps),
    )


def train_transform(
    pre: Preprocess, *, augment: bool = False, hflip: bool = False
) -> ImageTransform:
    """PIL image -> normalised tensor transform for training.

    With ``augment=False`` this is exactly :func:`eval_transform`. With ``augment=True``:

    * ``pre.crop=True``: resize the shorter side to ``resize_size`` and take a *random*
      ``crop_size`` crop instead of the center one (the classic Show-and-Tell recipe; the crop
      stays at the evaluation scale).
    * ``pre.crop=False``: no geometric augmentation at all - the whole image is the input
      because objects near the borders are mentioned in captions.
    * both: mild brightness/contrast/saturation jitter. No hue jitter: captions name colours.

    There is **no horizontal flip** unless ``hflip=True``: flipping turns "left of" into
    "right of", and this transform cannot rewrite the caption. Only enable it for data whose
    captions have no left/right words (or whose pipeline swaps them).

    Args:
        pre: The encoder's preprocessing contract (``encoder.preprocess``).
        augment: Add the random crop / colour jitter described above.
        hflip: Randomly flip horizontally with probability 0.5 (only with ``augment=True``).

    Returns:
        A callable mapping a PIL image to a float tensor of shape ``(3, crop_size, crop_size)``.
    """
    if not augment:
        if hflip:
            raise CaptioningError("train_transform(hflip=True) needs augment=True; set both")
        return eval_transform(pre)
    steps: list[Callable] = [_ToRGB()]
    if pre.crop:
        steps += [_Resize(pre.resize_size), v2.RandomCrop(pre.crop_size)]
    else:
        steps += _resize(pre)
    if hflip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    steps.append(v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.1, hue=0.0))
    steps += [v2.ToImage(), *_to_tensor(pre)]
    return ImageTransform(steps, _min_side(pre), output_side=pre.crop_size)
