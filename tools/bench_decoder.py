"""Decoder training throughput: our decoders against straightforward per-step reference loops.

Run through the dispatcher: ``python tools/bench.py decoder [--quick]``.

Every decoder runs one teacher-forced training step (forward, cross-entropy, backward) at the
published sizes (embedding 512, hidden 512, vocabulary 10000, batch 64, 16 words, image vector
4096, grid 196x512). Each reference computes the *same function with the same weights* in the
straightforward way, and the benchmark checks that both losses agree before timing:

* rnn / lstm / gru (``RNNDecoder``, ``every_step``): a Python loop of ``nn.RNNCell`` /
  ``nn.LSTMCell`` / ``nn.GRUCell`` fed ``[x_t; v]`` at every step, with the output layer applied
  per step.
* attention-LSTM (``AttentionDecoder``): the Show-Attend-Tell loop of the well-known PyTorch
  tutorial, whose attention module projects the whole grid (``W_a a_i``) again at every step
  and applies the output layer per step.

Timings alternate ours / reference within each repeat (so both see the same machine load) and
report medians; the ratio is what to read on a shared machine.

The ``ceiling`` column times the output layer and loss alone (10000-way linear + cross-entropy,
forward + backward over the same 64 x 16 words), which both sides compute in full: reference time
divided by that time is the best speedup any decoder could reach on this machine, even with a
recurrence that cost nothing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import _common  # noqa: F401  (puts the repo on sys.path)
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captioning.models.attention_decoder import AttentionDecoder
from captioning.models.decoder import RNNDecoder
from captioning.models.encoder import EncoderOutput

SIZES = {
    "vocab": 10000,
    "embed": 512,
    "hidden": 512,
    "attention": 512,
    "batch": 64,
    "length": 16,
    "vector": 4096,
    "regions": 196,
    "grid": 512,
}
TARGETS = {"rnn": 3.0, "lstm": 3.0, "gru": 3.0, "attention-lstm": 1.5}
CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


def make_batch(seed: int = 0) -> tuple[EncoderOutput, Tensor, Tensor, Tensor]:
    """Random features, inputs `<start> w1..w15`, lengths (all full) and targets."""
    g = torch.Generator().manual_seed(seed)
    b, t = SIZES["batch"], SIZES["length"]
    features = EncoderOutput(
        torch.randn(b, SIZES["vector"], generator=g).relu(),
        torch.randn(b, SIZES["regions"], SIZES["grid"], generator=g).relu(),
    )
    words = torch.randint(4, SIZES["vocab"], (b, t + 1), generator=g)
    words[:, 0] = 1
    return features, words[:, :-1], torch.full((b,), t), words[:, 1:]


def loss_of(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over (B * T) words."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # (B * T, V)


# -- references ----------------------------------------------------------------------------------


def cell_loop_reference(decoder: RNNDecoder) -> Callable[[EncoderOutput, Tensor], Tensor]:
    """An ``nn.*Cell`` loop with the decoder's weights: ``h_t = cell([x_t; v], h_{t-1})``."""
    rnn = decoder.rnn
    cell = CELLS[decoder.cell](rnn.input_size, rnn.hidden_size)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        setattr(cell, name, getattr(rnn, f"{name}_l0"))  # share the parameters

    def run(features: EncoderOutput, inputs: Tensor) -> Tensor:
        b = inputs.size(0)
        h = features.vector.new_zeros(b, rnn.hidden_size)
        c = torch.zeros_like(h)
        logits = []
        for t in range(inputs.size(1)):
            x = torch.cat([decoder.embed(inputs[:, t]), features.vector], dim=1)  # (B, E + D_v)
            if decoder.cell == "lstm":
                h, c = cell(x, (h, c))
            else:
                h = cell(x, h)
            logits.append(decoder.out(decoder.drop(h)))  # (B, V)
        return torch.stack(logits, dim=1)  # (B, T, V)

    return run


def tutorial_attention_reference(
    decoder: AttentionDecoder,
) -> Callable[[EncoderOutput, Tensor], Tensor]:
    """The tutorial's Show-Attend-Tell loop with the decoder's weights: the grid projection
    ``W_a a_i`` is recomputed inside the attention module at every step."""
    att = decoder.attention

    def run(features: EncoderOutput, inputs: Tensor) -> Tensor:
        grid = features.grid
        mean = grid.mean(dim=1)  # (B, D_g)
        h, c = torch.tanh(decoder.init_h(mean)), torch.tanh(decoder.init_c(mean))
        logits = []
        for t in range(inputs.size(1)):
            emb = decoder.embed(inputs[:, t])  # (B, E)
            grid_att = att.grid_proj(grid)  # (B, L, A), every step
            e = att.score(torch.tanh(grid_att + att.hidden_proj(h).unsqueeze(1))).squeeze(2)
            alpha = e.softmax(dim=1)  # (B, L)
            z = (grid * alpha.unsqueeze(2)).sum(dim=1)  # (B, D_g)
            gate = torch.sigmoid(decoder.f_beta(h))  # (B, 1)
            h, c = decoder.cell(torch.cat([emb, gate * z], dim=1), (h, c))
            deep = emb + decoder.out_h(h) + decoder.out_z(z)  # (B, E)
            logits.append(decoder.out(decoder.drop(deep)))  # (B, V)
        return torch.stack(logits, dim=1)  # (B, T, V)

    return run


# -- timing --------------------------------------------------------------------------------------


def train_step(model: nn.Module, fn: Callable[[], Tensor]) -> float:
    """Forward, loss, backward once; returns the loss."""
    model.zero_grad(set_to_none=True)
    loss = fn()
    loss.backward()
    return loss.item()


def output_layer_only(out: nn.Module, targets: Tensor) -> Callable[[], Tensor]:
    """The output layer and loss alone, on a (B, T, D) input of its width: what every decoder
    and every reference computes in full, whatever its recurrence."""
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(*targets.shape, out.in_features, generator=g).requires_grad_(True)
    return lambda: loss_of(out(hidden), targets)


def compare(
    name: str,
    model: nn.Module,
    ours: Callable[[], Tensor],
    ref: Callable[[], Tensor],
    floor: Callable[[], Tensor],
    *,
    warmup: int,
    repeats: int,
) -> dict[str, float | str]:
    """Check both compute the same loss, then time ours, the reference and the output layer
    alone (`floor`) alternately."""
    a, b = train_step(model, ours), train_step(model, ref)
    if abs(a - b) > 1e-3 * max(1.0, abs(a)):
        raise RuntimeError(f"{name}: reference loss {b} differs from ours {a}")
    times: dict[str, list[float]] = {"ours": [], "reference": [], "floor": []}
    for i in range(warmup + repeats):
        for key, fn in (("ours", ours), ("reference", ref), ("floor", floor)):
            start = time.perf_counter()
            train_step(model, fn)
            if i >= warmup:
                times[key].append(time.perf_counter() - start)
    tokens = SIZES["batch"] * SIZES["length"]
    ours_s, ref_s, floor_s = (statistics.median(times[k]) for k in ("ours", "reference", "floor"))
    return {
        "decoder": name,
        "ours_tok_s": round(tokens / ours_s),
        "ref_tok_s": round(tokens / ref_s),
        "output_layer_tok_s": round(tokens / floor_s),
        "speedup": round(ref_s / ours_s, 2),
        "ceiling": round(ref_s / floor_s, 2),
        "target": TARGETS[name],
    }


def run(quick: bool = False) -> dict:
    """Benchmark every decoder; returns ``rows`` and a ``markdown`` table."""
    torch.manual_seed(0)
    warmup, repeats = (1, 2) if quick else (1, 5)
    features, inputs, lengths, targets = make_batch()
    rows = []
    for cell in ("rnn", "lstm", "gru"):
        dec = RNNDecoder(
            vocab_size=SIZES["vocab"],
            vector_dim=SIZES["vector"],
            cell=cell,
            embed_dim=SIZES["embed"],
            hidden_dim=SIZES["hidden"],
            image_injection="every_step",
        ).eval()  # dropout off: same function
        ref = cell_loop_reference(dec)
        rows.append(
            compare(
                cell,
                dec,
                lambda d=dec: loss_of(d(features, inputs, lengths), targets),
                lambda r=ref: loss_of(r(features, inputs), targets),
                output_layer_only(dec.out, targets),
                warmup=warmup,
                repeats=repeats,
            )
        )
    att = AttentionDecoder(
        vocab_size=SIZES["vocab"],
        grid_dim=SIZES["grid"],
        cell="lstm",
        embed_dim=SIZES["embed"],
        hidden_dim=SIZES["hidden"],
        attention_dim=SIZES["attention"],
    ).eval()
    ref = tutorial_attention_reference(att)
    rows.append(
        compare(
            "attention-lstm",
            att,
            lambda: loss_of(att(features, inputs, lengths), targets),
            lambda: loss_of(ref(features, inputs), targets),
            output_layer_only(att.out, targets),
            warmup=warmup,
            repeats=repeats,
        )
    )
    return {"rows": rows, "sizes": SIZES, "markdown": markdown(rows)}


def markdown(rows: list[dict]) -> str:
    """The results as a Markdown table."""
    s = SIZES
    lines = [
        f"Teacher-forced training step (forward + cross-entropy + backward), batch {s['batch']} x "
        f"{s['length']} words, embedding {s['embed']}, hidden {s['hidden']}, vocabulary "
        f"{s['vocab']}, image vector {s['vector']}, grid {s['regions']}x{s['grid']}.",
        "",
        "| decoder | ours (tokens/s) | reference loop (tokens/s) | speedup | ceiling | target |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ok = "met" if r["speedup"] >= r["target"] else "missed"
        lines.append(
            f"| {r['decoder']} | {r['ours_tok_s']:,} | {r['ref_tok_s']:,} | "
            f"{r['speedup']:.2f}x | {r['ceiling']:.2f}x | >= {r['target']:.1f}x ({ok}) |"
        )
    lines += [
        "",
        "Both sides compute the same function with the same weights (their losses are checked "
        "equal first). The fused decoders compute the image term W_ih v once per caption, the "
        "reference loops at every word; the attention decoder projects the grid once per image, "
        "its reference at every word. Ceiling: reference time over the time of the output layer "
        "and loss alone (which both compute in full), the best speedup possible on this machine "
        "even if the recurrence cost nothing.",
    ]
    return "\n".join(lines) + "\n"
