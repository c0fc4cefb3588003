"""Every named choice answers an unknown name the same way: what was asked, what exists, the closest name."""

from __future__ import annotations

import pytest

from hf_language_ranker.registry import Registry, UnknownNameError


def test_a_registry_is_a_dict_in_registration_order():
    shapes = Registry("shape", {"square": 4})
    assert shapes.register("triangle", 3) == 3

    @shapes.register("circle")
    def circle() -> int:
        return 0

    assert list(shapes) == ["square", "triangle", "circle"] and shapes["circle"] is circle
    assert "square" in shapes and "cube" not in shapes and shapes.get("cube") is None and len(shapes) == 3
    assert isinstance(shapes, dict) and shapes | {"cube": 6} == {**shapes, "cube": 6}
    shapes["cube"] = 6
    del shapes["cube"]
    assert dict(shapes) == {"square": 4, "triangle": 3, "circle": circle}


def test_unknown_names_say_what_was_asked_what_exists_and_the_closest():
    shapes = Registry("shape", {"square": 4, "triangle": 3, "circle": 0})
    with pytest.raises(UnknownNameError) as raised:
        shapes["sqare"]
    assert str(raised.value) == "Unknown shape 'sqare'. Known: circle, square, triangle. Did you mean 'square'?"
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, KeyError)
    assert raised.value.args[0] == str(raised.value)  # the CLI prints a KeyError's first argument
    with pytest.raises(ValueError, match=r"^Unknown shape 'zzz'\. Known: circle, square, triangle\.$"):
        shapes["zzz"]
    with pytest.raises(KeyError, match="Unknown shape 'cube'"):
        shapes["cube"]
    with pytest.raises(ValueError, match=r"^Unknown shape 3\. Known: none\. Or draw one\.$"):
        Registry("shape", hint="Or draw one.")[3]


def test_a_name_is_registered_once():
    shapes = Registry("shape", {"square": 4})
    with pytest.raises(ValueError, match="The shape 'square' is already registered"):
        shapes.register("square", 5)
    assert shapes["square"] == 4


def test_every_pick_rule_has_its_dataset_form_and_the_name_tuples_follow_the_registries():
    from hf_language_ranker.agreement import PICK_RULES
    from hf_language_ranker.configuration import HEAD_TYPES, LOSS_TYPES, SELECTION_MODES
    from hf_language_ranker.evaluation.baselines import SELECTION_RULES
    from hf_language_ranker.heads import HEADS
    from hf_language_ranker.losses import LOSSES

    assert list(SELECTION_RULES) == list(PICK_RULES) == list(SELECTION_MODES) == ["argmax", "weighted_vote"]
    assert list(LOSSES) == list(LOSS_TYPES) == ["listwise", "marginal", "pairwise", "pointwise"]
    assert list(HEADS) == list(HEAD_TYPES) == ["listwise", "pointwise"]
