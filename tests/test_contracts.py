"""The contracts (captioning/contracts.py) and the layering: every decoder implements the step
contract, and imports run one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from helpers import ROOT

from captioning.contracts import CaptionDecoder, EncoderOutput
from captioning.models.attention_decoder import AttentionDecoder
from captioning.models.decoder import RNNDecoder

PACKAGE = ROOT / "captioning"


@pytest.mark.parametrize(
    "decoder",
    [
        RNNDecoder(vocab_size=10, vector_dim=4, cell="rnn"),
        RNNDecoder(vocab_size=10, vector_dim=4, cell="gru", image_injection="init_state"),
        RNNDecoder(vocab_size=10, vector_dim=0, image_injection="none"),
        AttentionDecoder(vocab_size=10, grid_dim=4, cell="lstm"),
    ],
    ids=["rnn", "gru", "language-model", "attention"],
)
def test_every_decoder_implements_the_step_contract(decoder) -> None:
    assert isinstance(decoder, CaptionDecoder)
    assert decoder.vocab_size == 10 and isinstance(decoder.has_attention, bool)


def test_an_object_without_reorder_state_is_not_a_decoder() -> None:
    class Half:
        vocab_size, has_attention = 3, False

        def init_state(self, features):
            return None

        def step(self, tokens, state, features):
            return tokens, state, {}

        def forward(self, features, inputs, lengths):
            return inputs

    assert not isinstance(Half(), CaptionDecoder)
    assert EncoderOutput._fields == ("vector", "grid", "mask")


def test_encoder_output_select_and_apply_carry_the_region_mask() -> None:
    vector, grid = torch.arange(6.0).view(3, 2), torch.arange(24.0).view(3, 4, 2)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    picked = EncoderOutput(vector, grid, mask).select(torch.tensor([2, 0]))
    assert torch.equal(picked.mask, mask[[2, 0]])
    assert torch.equal(picked.grid, grid[[2, 0]])
    assert EncoderOutput(vector, grid).select(torch.tensor([1])).mask is None
    doubled = EncoderOutput(vector, grid, mask).apply(lambda t: t.double())
    assert doubled.vector.dtype == doubled.grid.dtype == doubled.mask.dtype == torch.float64


def _imports(path: Path) -> set[str]:
    """The captioning modules a file imports (absolute imports only: the project uses no others)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.startswith("captioning")}


@pytest.mark.parametrize(
    "layer, forbidden",
    [
        (
            "data",
            (
                "captioning.models",
                "captioning.training",
                "captioning.decoding",
                "captioning.evaluation",
            ),
        ),
        ("decoding", ("captioning.training", "captioning.evaluation", "captioning.data")),
        ("evaluation", ("captioning.training",)),
        ("models", ("captioning.training", "captioning.decoding", "captioning.evaluation")),
    ],
)
def test_imports_run_one_way(layer: str, forbidden: tuple[str, ...]) -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((PACKAGE / layer).rglob("*.py"))
        for name in _imports(path)
        if name.startswith(forbidden)
    ]
    assert not wrong, wrong


def _all_imports(path: Path) -> list[str]:
    """Every module name a file imports (``from a.b import c``: ``a.b``)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return names


COMMANDS = PACKAGE / "cli"  # the command-line programs: the one place for hydra and argparse


def test_the_library_imports_neither_hydra_nor_the_tools() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        forbidden = ("tools", "benchmarks", "train", "evaluate", "caption")
        if COMMANDS not in path.parents:
            forbidden += ("hydra", "argparse")
        wrong += [
            f"{path.relative_to(ROOT)}: {name}"
            for name in _all_imports(path)
            if name.split(".")[0] in forbidden
        ]
    assert not wrong, wrong


def _module_graph() -> dict[str, set[str]]:
    """captioning module -> the captioning modules it names in an import (any import: at the
    top, inside functions, under TYPE_CHECKING), a name imported from a package counted as
    that submodule when one exists."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    edges.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def test_no_import_circle_anywhere_in_the_package() -> None:
    graph, done, circles = _module_graph(), set(), []

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            circles.append(" -> ".join([*path[path.index(name) :], name]))
            return
        if name in done:
            return
        for other in sorted(graph[name]):
            visit(other, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert not circles, circles


def test_the_circle_finder_finds_a_circle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: two modules importing each other are reported."""
    real = _module_graph()
    fake = {**real, "captioning.vocab": {*real["captioning.vocab"], "captioning.text"}}
    fake["captioning.text"] = {*real["captioning.text"], "captioning.vocab"}
    monkeypatch.setitem(globals(), "_module_graph", lambda: fake)
    with pytest.raises(AssertionError, match=r"captioning\.text -> captioning\.vocab"):
        test_no_import_circle_anywhere_in_the_package()


def test_nothing_in_the_library_imports_the_commands() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if COMMANDS not in path.parents
        for name in _all_imports(path)
        if name == "captioning.cli" or name.startswith("captioning.cli.")
    ]
    assert not wrong, wrong
    assert (COMMANDS / "train.py").is_file()  # (the check looks in the right place)


def test_encoder_output_to_casts_features_to_float32_and_keeps_the_mask_bool() -> None:
    half = EncoderOutput(
        torch.ones(2, 3, dtype=torch.float16),
        torch.ones(2, 4, 3, dtype=torch.float16),
        torch.ones(2, 4, dtype=torch.bool),
    )
    moved = half.to("cpu")
    assert moved.vector.dtype == moved.grid.dtype == torch.float32
    assert moved.mask.dtype == torch.bool
