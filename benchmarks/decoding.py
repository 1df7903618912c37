"""Decoding benchmark: batched decoding against per-image references, captions per second.

``python -m benchmarks decoding [--quick]`` (or ``python -m benchmarks.decoding``);
``python -m benchmarks decoding --check`` checks, at small sizes, that every reference finds our
captions (the tests run it).

Models: the LSTM decoder (``RNNDecoder``, image injected at every step) and the
Show-Attend-and-Tell decoder (``AttentionDecoder``) at published sizes (embed 512, hidden 512,
attention 512, vocabulary 10000, fc7 vector 4096, grid 196 x 512), and Up-Down
(``UpDownDecoder``) at its paper's (embed and LSTMs 1000, attention 512, 36 regions x 2048),
random weights, random non-negative features, 100 images, max_len 20, length_penalty 0.

Random weights give a nearly uniform next-word distribution in which `<end>` is as unlikely as any
word, so search would never stop. :class:`EndsAfter` makes the decoder behave like a trained one:
its output layer is scaled by a constant (measured once, along a greedy caption) that gives the
log-probabilities a spread (std over the vocabulary) of ``SPREAD``, and `<end>`'s logit gets a
bias that grows by ``SLOPE`` per word and reaches the top word's typical logit at word
``END_AT``. `<end>`'s own random logit moves the crossing by a few words per image, so captions
end after ~9-18 words. The "never" rows (one thread) forbid `<end>`: every caption runs to
max_len.

References (``tests/references.py``): the tutorial's way, one image at a time, its k live
hypotheses stepped as one batch (greedy: one row until `<end>`), with our search rules, so both
must return the same best caption and score (checked on the images the reference decodes; its
cost is linear in images, so it decodes every 10th image only). Version 0.1's reference (every
hypothesis stepped on its own) is timed beside it at one thread on captions that end (the setting
of the 0.1 figures), for one release.

For the LSTM a third side, "W_ih v per word", runs our same batched search with the decoder
stepped the straightforward way (``ref.PerWordImageTerm``: ``[E y; v]`` through ``nn.LSTM`` at
every step, so ``W_ih v`` is computed per word and per hypothesis): the before of keeping the
image term, computed once per image, in the decoding state. It must find our captions too.

Timing: captions per CPU second (robust to other processes on a shared machine; at two threads
it counts both threads' time, so it measures work, not latency), from the best of the repeats;
the wall-clock speedup beside it is what two threads buy on an idle machine. Ceiling: the reference's time over the
time our batched search spends in matrix products alone (``addmm`` with its bias, ``mm``, ``bmm``,
and the fused ``nn.LSTM`` layer, whose gate nonlinearities are a small part of it: their share of
one profiled run, times our time): the model's layers are the same arithmetic on both sides, so no implementation of
the rest can beat that ratio on this machine; "of ceiling" is our speedup over it (the share of
our time spent in those products).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from captioning.contracts import EncoderOutput
from captioning.decoding import DecodingSettings, generate
from captioning.models.attention_decoder import AttentionDecoder
from captioning.models.decoder import RNNDecoder
from captioning.models.updown import UpDownDecoder
from tests import references as ref

SIZES = {"vocab": 10000, "embed": 512, "hidden": 512, "attention": 512}
SIZES |= {"vector": 4096, "regions": 196, "grid": 512}
SMALL = {"vocab": 60, "embed": 16, "hidden": 24, "attention": 10, "vector": 20, "regions": 5}
SMALL |= {"grid": 12}
#: Up-Down at its paper's sizes over 36 bottom-up regions of 2048 (the released features)
UPDOWN = {"embed": 1000, "hidden": 1000, "attention": 512, "regions": 36, "grid": 2048}
UPDOWN_SMALL = {"regions": 4, "grid": 9}
DECODERS = ("lstm", "attention", "updown")
BOS, EOS = ref.BOS, ref.EOS
MAX_LEN, IMAGES = 20, 100
SPREAD, SLOPE, END_AT = 3.0, 1.5, 13  # see the module docstring
TOP_Z = 3.9  # a standard normal's typical maximum over 10000 draws
REF_IMAGES, OLD_REF_IMAGES = 10, 2  # images the references decode (every 10th)
THREADS = (1, 2)
SETTINGS = [(1, True), (3, True), (5, True), (5, False)]  # (beam, captions end)


class EndsAfter(nn.Module):
    """A decoder whose captions end after about END_AT words (benchmark stand-in for training).

    Args:
        decoder: the decoder to wrap (step contract); its output layer is scaled in place.
        scale: factor that gives its log-probabilities a spread of SPREAD (see :func:`build`).
        ends: False forbids `<end>` (every caption runs to max_len).
    """

    def __init__(self, decoder: nn.Module, scale: float, ends: bool = True) -> None:
        super().__init__()
        self.inner, self.ends, self.bias, self.image_steps = decoder, ends, 0.0, 0
        self.has_attention = decoder.has_attention
        with torch.no_grad():
            decoder.out.weight.mul_(scale)
            decoder.out.bias.mul_(scale)
        decoder.out.register_forward_hook(self._shift_end)

    def _shift_end(self, module: nn.Module, args: Any, logits: Tensor) -> None:
        logits[..., EOS] += self.bias  # (N, V) in place: decoding only

    def at_step(self, t: int) -> None:
        """Set `<end>`'s bias for the word t (1-based) that the next step predicts."""
        self.bias = SPREAD * TOP_Z + SLOPE * (t - END_AT) if self.ends else -math.inf

    def init_state(self, features: EncoderOutput) -> tuple[Any, int]:
        return self.inner.init_state(features), 0

    def reorder_state(self, state: tuple[Any, int], index: Tensor) -> tuple[Any, int]:
        return self.inner.reorder_state(state[0], index), state[1]

    def step(self, tokens: Tensor, state: tuple[Any, int], features: EncoderOutput):
        inner, t = state
        self.at_step(t + 1)
        if hasattr(features, "image"):  # count the images in this step's batch
            self.image_steps += int(features.image.unique().numel())
        logprobs, inner, extras = self.inner.step(tokens, inner, features)  # (N, V)
        return logprobs, (inner, t + 1), extras


def sizes_of(name: str, sizes: dict[str, int]) -> dict[str, int]:
    """The sizes decoder `name` runs at: `sizes`, Up-Down's own at the published ones."""
    if name != "updown":
        return sizes
    return sizes | (UPDOWN if sizes is SIZES else UPDOWN_SMALL)


class PerWordSteps(nn.Module):
    """`model` (an :class:`EndsAfter` over an ``every_step`` LSTM) stepped with ``W_ih v``
    computed at every step (``ref.PerWordImageTerm``); the same `<end>` bias schedule."""

    def __init__(self, model: EndsAfter) -> None:
        super().__init__()
        self.model, self.per_word = model, ref.PerWordImageTerm(model.inner)
        self.has_attention, self.vocab_size = False, model.inner.vocab_size

    def init_state(self, features: EncoderOutput) -> tuple[Any, int]:
        return self.per_word.init_state(features), 0

    def reorder_state(self, state: tuple[Any, int], index: Tensor) -> tuple[Any, int]:
        return self.per_word.reorder_state(state[0], index), state[1]

    def step(self, tokens: Tensor, state: tuple[Any, int], features: EncoderOutput):
        inner, t = state
        self.model.at_step(t + 1)
        logprobs, inner, extras = self.per_word.step(tokens, inner, features)  # (N, V)
        return logprobs, (inner, t + 1), extras


def build(name: str, sizes: dict[str, int] = SIZES, *, ends: bool = True) -> EndsAfter:
    """The wrapped decoder `name` ("lstm", "attention" or "updown"), random weights, eval
    mode."""
    torch.manual_seed(0)
    common = {"vocab_size": sizes["vocab"], "embed_dim": sizes["embed"], "cell": "lstm"}
    common["hidden_dim"] = sizes["hidden"]
    if name == "updown":
        del common["cell"]
        decoder = UpDownDecoder(grid_dim=sizes["grid"], attention_dim=sizes["attention"], **common)
    elif name == "lstm":
        decoder = RNNDecoder(vector_dim=sizes["vector"], image_injection="every_step", **common)
    else:
        decoder = AttentionDecoder(
            grid_dim=sizes["grid"], attention_dim=sizes["attention"], dropout=0.0, **common
        )
    decoder.eval()
    spreads = []
    with torch.no_grad():  # the spread of its log-probabilities along a greedy caption
        probe = features(8, sizes, seed=1)
        state, tokens = decoder.init_state(probe), torch.full((8,), BOS)
        for _ in range(END_AT):
            logprobs, state, _ = decoder.step(tokens, state, probe)  # (8, V)
            spreads.append(float(logprobs.std(dim=-1).mean()))
            tokens = logprobs.argmax(dim=-1)
    return EndsAfter(decoder, SPREAD * len(spreads) / sum(spreads), ends).eval()


def features(batch: int, sizes: dict[str, int] = SIZES, *, seed: int = 0) -> EncoderOutput:
    """Non-negative random fc7 vectors (B, D_v) and grids (B, L, D_g), like ReLU outputs; each
    image's regions share a random offset, so images differ in their mean region."""
    g = torch.Generator().manual_seed(seed)
    vector = torch.randn(batch, sizes["vector"], generator=g).relu()  # (B, D_v)
    offset = 2.0 * torch.randn(batch, 1, sizes["grid"], generator=g)  # (B, 1, D_g)
    grid = offset + torch.randn(batch, sizes["regions"], sizes["grid"], generator=g)
    return EncoderOutput(vector, grid.relu())


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """Best CPU time and best wall-clock time of `repeats` calls, and the last result."""
    cpu, wall, out = math.inf, math.inf, None
    for _ in range(repeats):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        out = fn()
        cpu = min(cpu, time.process_time() - start_cpu)
        wall = min(wall, time.perf_counter() - start_wall)
    return cpu, wall, out


MATMULS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::mkldnn_rnn_layer")  # the last: nn.LSTM


def matmul_share(fn: Callable[[], Any]) -> float:
    """The share of `fn`'s time spent in matrix products, from one profiled call (a ratio of
    wall-clock times, so that other processes slowing both down leave it unchanged)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        fn()
        total = time.perf_counter() - start
    matmuls = sum(e.cpu_time_total for e in prof.key_averages() if e.key in MATMULS)  # + bias
    return matmuls / 1e6 / total


def words(seq: list[int]) -> list[int]:
    """The ids up to and including `<end>`."""
    return seq[: seq.index(EOS) + 1] if EOS in seq else seq


def ours(model: EndsAfter, feats: EncoderOutput, beam: int) -> list[tuple[list[int], float]]:
    """Best (words, score) per image from :func:`captioning.decoding.generate`."""
    out = generate(model, feats, DecodingSettings(beam_size=beam, max_len=MAX_LEN))
    pairs = zip(out.best.tolist(), out.best_scores, strict=True)  # (B, T), (B,)
    return [(words(s), float(x)) for s, x in pairs]


def reference(model: EndsAfter, feats: EncoderOutput, beam: int) -> list[tuple[list[int], float]]:
    """The tutorial-style per-image reference for `beam` (greedy for 1)."""
    if beam == 1:
        return ref.greedy(model, feats, max_len=MAX_LEN)
    return ref.beam_search(model, feats, beam_size=beam, max_len=MAX_LEN)


def same(a: list[tuple[list[int], float]], b: list[tuple[list[int], float]]) -> bool:
    """Same words and scores within 1e-4 on the images both decoded."""
    return all(wa == wb and abs(sa - sb) <= 1e-4 for (wa, sa), (wb, sb) in zip(a, b, strict=False))


def measure_row(
    model: EndsAfter, feats: EncoderOutput, beam: int, threads: int, quick: bool
) -> dict[str, Any]:
    """One row: ours on all images, the references on a few spread over them."""
    n_ref, repeats = (1, 1) if quick else (REF_IMAGES, 2)
    model.image_steps = 0
    ours_s, ours_wall, got = timed(partial(ours, model, feats, beam), repeats)
    steps = model.image_steps / (repeats * len(got))  # decoder steps per image
    sample = torch.arange(n_ref) * (len(got) // n_ref)  # images spread over the batch
    ref_s, ref_wall, want = timed(partial(reference, model, feats.select(sample), beam), 1)
    floor = ours_s * matmul_share(partial(ours, model, feats, beam))  # our matmul time
    if not model.has_attention:  # W_ih v per word and hypothesis: the before, same search
        per_word = PerWordSteps(model)
        before_s, _, before = timed(partial(ours, per_word, feats, beam), repeats)
        per_word_row = {"per_word_captions_per_s": len(got) / before_s}
        per_word_row |= {
            "image_term_speedup": before_s / ours_s,
            "image_term_ceiling": before_s / floor,  # over our matmuls, which both must do
            "per_word_same": same(got, before),
        }
    n, picked = len(got), [got[i] for i in sample.tolist()]
    row = {"beam": beam, "threads": threads, "images": n, "ends": model.ends}
    row |= {"ours_captions_per_s": n / ours_s, "ref_captions_per_s": n_ref / ref_s}
    row |= {"speedup": (n / ours_s) / (n_ref / ref_s), "ceiling": (n / floor) / (n_ref / ref_s)}
    row |= {"speedup_wall": (n / ours_wall) / (n_ref / ref_wall), "steps_per_image": steps}
    row |= {"same": same(picked, want), "checked": n_ref}
    if not model.has_attention:
        row |= per_word_row
    row["mean_words"] = sum(len([w for w in s if w != EOS]) for s, _ in got) / n
    if threads == 1 and model.ends:  # version 0.1's reference, in the 0.1 figures' setting
        n_old = 1 if quick else OLD_REF_IMAGES
        old_feats = feats.select(sample[:n_old])
        old_run = partial(
            ref.per_hypothesis_beam_search, model, old_feats, beam_size=beam, max_len=MAX_LEN
        )
        old_s, _, old = timed(old_run, 1)
        row |= {"old_ref_captions_per_s": n_old / old_s, "old_same": same(picked, old)}
        row["old_speedup"] = (n / ours_s) / (n_old / old_s)
    return row


def run(quick: bool = False, decoders: tuple[str, ...] = DECODERS) -> dict[str, Any]:
    """Every decoder, thread count, beam size and ending; ``rows`` and ``markdown``."""
    threads_before, rows = torch.get_num_threads(), []
    try:
        for name in _known(decoders):
            feats = features(IMAGES, sizes_of(name, SIZES))
            for ends in (True, False):
                model = build(name, sizes_of(name, SIZES), ends=ends)
                warm_up = DecodingSettings(beam_size=3, max_len=4)
                generate(model, feats.select(torch.arange(2)), warm_up)
                for threads in THREADS if ends else THREADS[:1]:  # never-ending: 1 thread
                    torch.set_num_threads(threads)
                    for beam, ending in SETTINGS:
                        if ending == ends:
                            row = measure_row(model, feats, beam, threads, quick)
                            rows.append({"decoder": name, **row})
    finally:
        torch.set_num_threads(threads_before)
    rank = {name: i for i, name in enumerate(DECODERS)}
    rows.sort(key=lambda r: (rank[r["decoder"]], r["threads"], not r["ends"], r["beam"]))
    return {"rows": rows, "markdown": markdown(rows)}


def _known(decoders: tuple[str, ...]) -> tuple[str, ...]:
    """`decoders`, checked against :data:`DECODERS`."""
    unknown = sorted(set(decoders) - set(DECODERS))
    if unknown:
        raise SystemExit(f"unknown decoder {unknown[0]!r}; choose from {', '.join(DECODERS)}")
    return decoders


def markdown(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table with its legend."""
    lines = [
        "`python -m benchmarks decoding`: 100 images, max_len 20, published sizes (updown: "
        "embedding/LSTMs 1000, attention 512, 36 regions x 2048).",
        "",
        "| decoder | threads | beam | captions end | ours (captions/s) | reference (captions/s) "
        "| speedup | wall-clock speedup | ceiling | of ceiling | 0.1 reference (captions/s) "
        "| speedup vs 0.1 | same output | mean words | steps/image "
        "| W_ih v per word (captions/s) | once per image: speedup | its ceiling |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per_word = ("-", "-", "-")
        if "per_word_captions_per_s" in r:
            same_words = "" if r["per_word_same"] else " (output differs)"
            per_word = (
                f"{r['per_word_captions_per_s']:.1f}",
                f"{r['image_term_speedup']:.2f}x{same_words}",
                f"{r['image_term_ceiling']:.2f}x",
            )
        old = ("-", "-")
        if "old_speedup" in r:
            old = (f"{r['old_ref_captions_per_s']:.2f}", f"{r['old_speedup']:.1f}x")
        checks = f"{'yes' if r['same'] else 'NO'} ({r['checked']} img)"
        if "old_same" in r and not r["old_same"]:
            checks += ", 0.1: NO"
        lines.append(
            f"| {r['decoder']} | {r['threads']} | {r['beam']} "
            f"| {'9-18 words' if r['ends'] else 'never (20 words)'} "
            f"| {r['ours_captions_per_s']:.1f} | {r['ref_captions_per_s']:.2f} "
            f"| {r['speedup']:.1f}x | {r['speedup_wall']:.1f}x | {r['ceiling']:.1f}x "
            f"| {r['speedup'] / r['ceiling']:.0%} "
            f"| {old[0]} | {old[1]} | {checks} | {r['mean_words']:.1f} "
            f"| {r['steps_per_image']:.1f} | {per_word[0]} | {per_word[1]} | {per_word[2]} |"
        )
    lines += [
        "",
        "Ours: `captioning.decoding.generate` on all 100 images at once (beam 1 = greedy). "
        "Reference: the tutorial's way, one image at a time with its k hypotheses as one batch "
        f"(greedy: one row), timed on {REF_IMAGES} images (every 10th); same output: identical "
        "best caption and score (1e-4) on those. 0.1 reference: the per-hypothesis reference "
        f"the previous README's figures came from (the first {OLD_REF_IMAGES} of those, 1 thread). "
        "Captions per CPU second (both threads counted at 2), the wall-clock speedup beside. "
        "Ceiling: reference time over our time in matrix products alone (with their bias; "
        "their share of a profiled run); of ceiling: speedup / ceiling. Steps/image: "
        "decoder steps each image took part in (the search's stopping rule; words + `<end>` is "
        "the least). Random weights with a growing `<end>` bias (benchmarks/decoding.py). "
        "W_ih v per word (LSTM): the same batched search with the image term computed at every "
        "step for every hypothesis ([E y; v] through nn.LSTM), all 100 images; once per image: "
        "its time over ours (same captions and scores checked); its ceiling: its time over our "
        "time in matrix products, which both sides compute.",
    ]
    return "\n".join(lines)


def check() -> int:
    """At small sizes, every reference returns our best captions and scores; 0 when they do."""
    torch.set_num_threads(1)
    failures = 0
    for name in DECODERS:
        feats = features(6, sizes_of(name, SMALL), seed=3)
        for ends in (True, False):
            model = build(name, sizes_of(name, SMALL), ends=ends)
            for beam in (1, 2, 3, 5):
                got = ours(model, feats, beam)
                refs = {"reference": reference(model, feats, beam)}
                refs["0.1 reference"] = ref.per_hypothesis_beam_search(
                    model, feats, beam_size=beam, max_len=MAX_LEN
                )
                if name == "lstm":
                    refs["W_ih v per word"] = ours(PerWordSteps(model), feats, beam)
                for label, want in refs.items():
                    ok = same(got, want)
                    failures += not ok
                    print(f"{name} ends={ends} beam={beam} {label}: {'ok' if ok else 'DIFFERS'}")
    return int(failures > 0)


if __name__ == "__main__":
    if "--check" in sys.argv:
        sys.exit(check())
    print(run(quick="--quick" in sys.argv)["markdown"])
