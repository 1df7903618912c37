"""Decoder training throughput: our decoders against the tutorials' teacher-forcing loops.

``python -m benchmarks decoder [--quick]``; ``python -m benchmarks decoder --check`` checks, at
small sizes, that every reference computes our loss and gradients (the tests run it).

Every decoder runs one teacher-forced training step (forward, loss, backward) at the published
sizes (embedding 512, hidden 512, attention 512, vocabulary 10000, image vector 4096, grid
196x512; Up-Down at its paper's sizes, 1000/1000/512 over 36 regions of 2048) on 64 captions of
17 input words, or of 8-17 words (uniformly drawn, seed 0). The loss
is the mean cross-entropy over the real words, plus the doubly stochastic attention penalty for
the attention decoder (what our trainer computes). Each reference computes the *same function
with the same weights* the way the tutorials run it (``tests/references.py``): captions
sorted by length, an ``nn.*Cell`` stepping only the captions that have a word t (the tutorial's
``batch_size_t``), the output layer per step into a predictions tensor, the loss over the packed
positions; the attention loop projects the grid again at every step. The benchmark checks that
both losses agree before timing. Version 0.1's reference (every caption stepped to the longest
one) is timed beside it at one thread and full-length captions (the setting of the 0.1 figures),
for one release. For the RNN decoders a third side, "W_ih v per word", runs our own fused pass
fed ``[x_t; v]`` at every word (``ref.per_word_image_loss``): the before of computing the image
term once per caption row, with everything else equal.

Timings alternate ours / reference / floor within each of 2 rounds (so all see the same machine
load; the first round also checks the losses) and report the best CPU time (robust to other
processes on a shared machine; at two threads it counts both threads' time, so it measures work,
not latency) with the wall-clock speedup beside it (what two threads buy on an idle machine).

Ceiling: the reference's time over the time of the output layer and loss alone (10000-way linear
+ cross-entropy, forward and backward over the same real words), which both sides compute in
full: the best speedup any decoder could reach on this machine, even with a recurrence that cost
nothing. "Of ceiling" is our speedup over it (the share of our time that output layer takes).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captioning.contracts import EncoderOutput
from captioning.models.attention_decoder import AttentionDecoder
from captioning.models.decoder import RNNDecoder
from captioning.models.updown import UpDownDecoder
from tests import references as ref

SIZES = {"vocab": 10000, "embed": 512, "hidden": 512, "attention": 512, "batch": 64}
SIZES |= {"length": 17, "shortest": 8, "vector": 4096, "regions": 196, "grid": 512}
SMALL = {"vocab": 50, "embed": 8, "hidden": 12, "attention": 7, "batch": 6, "length": 7}
SMALL |= {"shortest": 2, "vector": 10, "regions": 5, "grid": 6}
#: Up-Down at its paper's sizes over 36 bottom-up regions of 2048 (the released features)
UPDOWN = {"embed": 1000, "hidden": 1000, "attention": 512, "regions": 36, "grid": 2048}
UPDOWN_SMALL = {"regions": 4, "grid": 9}
DECODERS = ("rnn", "lstm", "gru", "attention-lstm", "updown")
THREADS = (1, 2)
Batch = tuple[EncoderOutput, Tensor, Tensor, Tensor]


def make_batch(sizes: dict[str, int], *, varied: bool, seed: int = 0) -> Batch:
    """Random features, inputs `<start> w1 ...` (right-padded), lengths and targets."""
    g = torch.Generator().manual_seed(seed)
    b, t = sizes["batch"], sizes["length"]
    features = EncoderOutput(
        torch.randn(b, sizes["vector"], generator=g).relu(),
        torch.randn(b, sizes["regions"], sizes["grid"], generator=g).relu(),
    )
    lengths = torch.full((b,), t)
    if varied:
        lengths = torch.randint(sizes["shortest"], t + 1, (b,), generator=g)
    words = torch.randint(4, sizes["vocab"], (b, t + 1), generator=g)
    words[:, 0] = 1
    real = torch.arange(t + 1) <= lengths.unsqueeze(1)  # (B, T + 1) input and target words
    words = words.masked_fill(~real, 0)
    return features, words[:, :-1], lengths, words[:, 1:]


def sizes_of(name: str, sizes: dict[str, int]) -> dict[str, int]:
    """The sizes decoder `name` runs at: `sizes`, Up-Down's own at the published ones."""
    if name != "updown":
        return sizes
    return sizes | (UPDOWN if sizes is SIZES else UPDOWN_SMALL)


def build(name: str, sizes: dict[str, int]) -> nn.Module:
    """Decoder `name` at `sizes`, random weights, eval mode (dropout off: the same function)."""
    torch.manual_seed(0)
    common = {"vocab_size": sizes["vocab"], "embed_dim": sizes["embed"]}
    common["hidden_dim"] = sizes["hidden"]
    if name == "updown":
        return UpDownDecoder(
            grid_dim=sizes["grid"], attention_dim=sizes["attention"], **common
        ).eval()
    if name == "attention-lstm":
        return AttentionDecoder(
            grid_dim=sizes["grid"], cell="lstm", attention_dim=sizes["attention"], **common
        ).eval()
    return RNNDecoder(
        vector_dim=sizes["vector"], cell=name, image_injection="every_step", **common
    ).eval()


def our_loss(
    decoder: nn.Module, features: EncoderOutput, inputs: Tensor, lengths: Tensor, targets: Tensor
) -> Tensor:
    """Our decoder's forward and the loss our trainer takes (real words only)."""
    if decoder.has_attention:
        logits, alphas = decoder(features, inputs, lengths, return_alphas=True)
    else:
        logits, alphas = decoder(features, inputs, lengths), None
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=0)  # (B*T, V)
    return loss + decoder.attention_penalty(alphas, lengths) if alphas is not None else loss


def output_layer_only(out: nn.Linear, targets: Tensor) -> Callable[[], Tensor]:
    """The output layer and loss alone over the real words (what both sides compute in full)."""
    words = targets[targets != 0]  # (P,)
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(words.numel(), out.in_features, generator=g).requires_grad_(True)
    return lambda: F.cross_entropy(out(hidden), words)


def train_step(model: nn.Module, fn: Callable[[], Tensor]) -> float:
    """Forward, loss, backward once; returns the loss."""
    model.zero_grad(set_to_none=True)
    loss = fn()
    loss.backward()
    return loss.item()


def compare(
    model: nn.Module, sides: dict[str, Callable[[], Tensor]], repeats: int
) -> dict[str, tuple[float, float]]:
    """Time every side alternately (`repeats` rounds); best CPU and wall-clock seconds. The
    first round also checks that every side computes our loss."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    for i in range(repeats):
        losses = {}
        for name, fn in sides.items():
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            losses[name] = train_step(model, fn)
            times[name].append((time.process_time() - start_cpu, time.perf_counter() - start_wall))
        for name, loss in losses.items():
            if i == 0 and name != "floor" and abs(loss - losses["ours"]) > 1e-3 * abs(loss):
                raise RuntimeError(f"{name} loss {loss} differs from ours {losses['ours']}")
    return {
        name: tuple(min(t[j] for t in values) for j in (0, 1)) for name, values in times.items()
    }


def run(quick: bool = False, decoders: tuple[str, ...] = DECODERS) -> dict[str, Any]:
    """Every decoder, thread count and length setting; ``rows`` and ``markdown``."""
    threads_before, rows = torch.get_num_threads(), []
    try:
        for threads in THREADS:
            torch.set_num_threads(threads)
            for varied in (False, True):
                for name in _known(decoders):
                    batch = make_batch(sizes_of(name, SIZES), varied=varied)
                    tokens = int(batch[2].sum())
                    rows.append(measure(name, batch, threads, varied, tokens, quick))
    finally:
        torch.set_num_threads(threads_before)
    return {"rows": rows, "sizes": SIZES, "markdown": markdown(rows)}


def measure(
    name: str, batch: Batch, threads: int, varied: bool, tokens: int, quick: bool
) -> dict[str, Any]:
    """One row of the table."""
    dec = build(name, sizes_of(name, SIZES))
    sides = {
        "ours": lambda: our_loss(dec, *batch),
        "reference": lambda: ref.teacher_forced_loss(dec, *batch),
        "floor": output_layer_only(dec.out, batch[3]),
    }
    if not dec.has_attention:  # W_ih v once per word: the before of once per caption row
        sides["per_word"] = lambda: ref.per_word_image_loss(dec, *batch)
    if threads == 1 and not varied and name != "updown":  # the setting of the 0.1 figures
        sides["old"] = lambda: ref.padded_loss(dec, *batch)
    t = compare(dec, sides, 1 if quick else 2)
    (ours, ours_wall), (ref_s, ref_wall) = t["ours"], t["reference"]
    row = {"decoder": name, "threads": threads, "lengths": "8-17" if varied else "17"}
    row |= {"ours_tok_s": tokens / ours, "ref_tok_s": tokens / ref_s}
    row |= {"speedup": ref_s / ours, "speedup_wall": ref_wall / ours_wall}
    row["ceiling"] = ref_s / t["floor"][0]
    if "per_word" in t:
        row |= {"per_word_tok_s": tokens / t["per_word"][0]}
        row["image_term_speedup"] = t["per_word"][0] / ours
        row["image_term_ceiling"] = t["per_word"][0] / t["floor"][0]  # recurrence for free
    if "old" in t:
        row |= {"old_tok_s": tokens / t["old"][0], "old_speedup": t["old"][0] / ours}
    return row


def _known(decoders: tuple[str, ...]) -> tuple[str, ...]:
    """`decoders`, checked against :data:`DECODERS`."""
    unknown = sorted(set(decoders) - set(DECODERS))
    if unknown:
        raise SystemExit(f"unknown decoder {unknown[0]!r}; choose from {', '.join(DECODERS)}")
    return decoders


def markdown(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table with its legend."""
    s = SIZES
    lines = [
        f"`python -m benchmarks decoder`: one training step (forward + loss + backward), "
        f"{s['batch']} captions, vocabulary {s['vocab']}, embedding/hidden/attention "
        f"{s['embed']}, image vector {s['vector']}, grid {s['regions']}x{s['grid']}; updown at "
        f"its paper's sizes: embedding/LSTMs {UPDOWN['embed']}, attention "
        f"{UPDOWN['attention']}, {UPDOWN['regions']} regions x {UPDOWN['grid']}.",
        "",
        "| decoder | threads | caption words | ours (words/s) | reference (words/s) | speedup "
        "| wall-clock speedup | ceiling | of ceiling | 0.1 reference (words/s) "
        "| speedup vs 0.1 | W_ih v per word (words/s) | once per row: speedup | its ceiling |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per_word = ("-", "-", "-")
        if "per_word_tok_s" in r:
            per_word = (
                f"{r['per_word_tok_s']:,.0f}",
                f"{r['image_term_speedup']:.2f}x",
                f"{r['image_term_ceiling']:.2f}x",
            )
        old = ("-", "-")
        if "old_speedup" in r:
            old = (f"{r['old_tok_s']:,.0f}", f"{r['old_speedup']:.2f}x")
        lines.append(
            f"| {r['decoder']} | {r['threads']} | {r['lengths']} | {r['ours_tok_s']:,.0f} "
            f"| {r['ref_tok_s']:,.0f} | {r['speedup']:.2f}x | {r['speedup_wall']:.2f}x "
            f"| {r['ceiling']:.2f}x "
            f"| {r['speedup'] / r['ceiling']:.0%} | {old[0]} | {old[1]} "
            f"| {per_word[0]} | {per_word[1]} | {per_word[2]} |"
        )
    lines += [
        "",
        "Words/s: real (non-padding) input words per CPU second (both threads counted at 2), "
        "best of 2 rounds; the wall-clock speedup beside. Reference: the tutorial's way (captions "
        "sorted by length, the batch shrinking as captions end, an nn.*Cell per step, the "
        "output layer per step, the attention grid projected again at every step); 0.1 "
        "reference: every caption stepped to the longest (the previous README's figures). All "
        "compute the same loss with the same weights (checked first). Ceiling: reference time "
        "over the time of the output layer and loss alone, which every side computes in full; "
        "of ceiling: speedup / ceiling. Up-Down's reference is its reference implementation's "
        "way (self-critical.pytorch: region embeddings and their attention projection once "
        "per image, every caption stepped at every step to the longest, log-softmax per step). "
        "W_ih v per word: our fused pass fed [x_t; v] at every "
        "word (the image term computed per word; RNN decoders), timed beside ours; once per "
        "row: its time over ours; its ceiling: its time over the output layer and loss alone.",
    ]
    return "\n".join(lines) + "\n"


def check() -> int:
    """At small sizes, every reference computes our loss and gradients; 0 when they do."""
    torch.set_num_threads(1)
    failures = 0
    for varied in (False, True):
        for name in DECODERS:
            batch = make_batch(sizes_of(name, SMALL), varied=varied, seed=2)
            dec = build(name, sizes_of(name, SMALL)).double()
            feats = batch[0].apply(torch.Tensor.double)
            args = (feats, *batch[1:])
            grads = []
            fns = [our_loss, ref.teacher_forced_loss, ref.padded_loss]
            if not dec.has_attention:
                fns.append(ref.per_word_image_loss)
            for fn in fns:
                dec.zero_grad()
                loss = fn(dec, *args)
                loss.backward()
                grad = [
                    p.grad if p.grad is not None else torch.zeros_like(p) for p in dec.parameters()
                ]
                grads.append([loss.detach(), *(g.clone() for g in grad)])
            ok = all(
                torch.allclose(a, b, rtol=1e-6, atol=1e-9)
                for other in grads[1:]
                for a, b in zip(other, grads[0], strict=True)
            )
            failures += not ok
            print(f"{name} varied={varied}: {'ok' if ok else 'DIFFERS'}")
    return int(failures > 0)


if __name__ == "__main__":
    if "--check" in sys.argv:
        sys.exit(check())
    print(run(quick="--quick" in sys.argv)["markdown"])
