"""The contracts (captioning/contracts.py) and the layering: every decoder implements the step
contract, and imports run one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from captioning.contracts import CaptionDecoder, EncoderOutput
from captioning.models.attention_decoder import AttentionDecoder
from captioning.models.decoder import RNNDecoder

ROOT = Path(__file__).resolve().parents[1]
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
    assert EncoderOutput._fields == ("vector", "grid")


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
        ("data", ("captioning.models", "captioning.training", "captioning.decoding")),
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
