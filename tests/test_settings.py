"""Typed settings (captioning.settings): a mapping parsed into a dataclass, every mistake one
line naming the dotted key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from captioning.errors import CaptioningError
from captioning.settings import bounded, parse_settings, plain, unknown_key


@dataclass(frozen=True)
class Inner:
    size: int = bounded(ge=1)
    rate: float = bounded(gt=0.0, lt=1.0)


@dataclass(frozen=True)
class Outer:
    name: str
    mode: Literal["fast", "slow"]
    inner: Inner
    limit: int | None = bounded(ge=0)
    flag: bool = False
    extra: dict = field(default_factory=dict)
    level: int = field(default=3, metadata={"ge": 0, "note": "0 = off"})


GOOD = {"name": "x", "mode": "fast", "inner": {"size": 2, "rate": 0.5}, "limit": None}


def test_a_good_mapping_becomes_the_dataclass_with_defaults_and_numbers_converted() -> None:
    out = parse_settings(Outer, {**GOOD, "inner": {"size": 2, "rate": 0.25}})
    assert out == Outer("x", "fast", Inner(2, 0.25), None, False, {}, 3)
    converted = parse_settings(Outer, {**GOOD, "name": 2024, "level": 0})
    assert converted.name == "2024" and converted.level == 0  # e.g. data.root=2024
    rate = parse_settings(Inner, {"size": 4, "rate": 0.5}).rate
    assert rate == 0.5 and isinstance(rate, float)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mode": "medium"}, r"^mode='medium': must be one of fast, slow$"),
        ({"flag": "yes"}, r"^flag='yes': must be true or false$"),
        ({"limit": -1}, r"^limit=-1: must be >= 0$"),
        ({"limit": 1.5}, r"^limit=1\.5: must be an integer or null$"),
        ({"inner": {"size": 0, "rate": 0.5}}, r"^inner\.size=0: must be >= 1$"),
        ({"inner": {"size": 1, "rate": 1.0}}, r"^inner\.rate=1\.0: must be < 1\.0$"),
        ({"inner": {"size": True, "rate": 0.5}}, r"^inner\.size=True: must be an integer$"),
        ({"level": -2}, r"^level=-2: must be >= 0 \(0 = off\)$"),
        ({"inner": 3}, r"^inner must be a mapping, got 3$"),
    ],
)
def test_each_mistake_is_one_line_naming_the_dotted_key(change: dict, message: str) -> None:
    with pytest.raises(CaptioningError, match=message) as info:
        parse_settings(Outer, {**GOOD, **change})
    assert "\n" not in str(info.value)


def test_a_missing_key_without_default_and_an_unknown_key_are_named() -> None:
    with pytest.raises(CaptioningError, match=r"^mode is missing: add it to the config"):
        parse_settings(Outer, {k: v for k, v in GOOD.items() if k != "mode"})
    with pytest.raises(CaptioningError, match=r"inner\.sise is not a setting.*did you mean size"):
        parse_settings(Outer, {**GOOD, "inner": {"sise": 2, "rate": 0.5}})


def test_a_renamed_key_names_its_new_home() -> None:
    error = unknown_key("trainer.old.depth", ["epochs"], {"trainer.old": "optim.new"})
    assert str(error) == "trainer.old.depth is now optim.new.depth: use that key instead"


def test_plain_turns_nested_mappings_and_sequences_into_dicts_and_lists() -> None:
    from omegaconf import OmegaConf

    node = OmegaConf.create({"a": [1, {"b": (2, 3)}], "c": {"d": "e"}})
    assert plain(node) == {"a": [1, {"b": [2, 3]}], "c": {"d": "e"}}
