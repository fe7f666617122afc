"""Component specs: parsed with ast, literal arguments only, errors pointing at the offending token."""

from __future__ import annotations

import pytest

from expsvc.specs import ComponentSpec, SpecError, parse, parse_list


def test_parse_list_of_layers() -> None:
    specs = parse_list("linear(5), tanh, linear(3, bias=False), leaky_relu(negative_slope=0.2)")
    assert specs == [
        ComponentSpec("linear", (5,)),
        ComponentSpec("tanh"),
        ComponentSpec("linear", (3,), {"bias": False}),
        ComponentSpec("leaky_relu", (), {"negative_slope": 0.2}),
    ]


def test_literals_of_every_kind() -> None:
    spec = parse("adamw(lr=1e-3, betas=(0.9, 0.99), weight_decay=-0.0, amsgrad=True, name='x', w=[1, 2], p=None)")
    assert spec.kwargs == {"lr": 1e-3, "betas": (0.9, 0.99), "weight_decay": -0.0, "amsgrad": True,
                           "name": "x", "w": [1, 2], "p": None}
    assert str(parse("adamw(weight_decay=0)")) == "adamw(weight_decay=0)"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("linear(5,, tanh", "column"),
        ("linear(__import__('os').system('true'))", "literal"),
        ("linear(5) + tanh", "expected a name"),
        ("lambda: 1", "expected a name"),
        ("", "empty"),
        ("   ", "empty"),
        ("adamw(**{'lr': 1})", "'**' is not allowed"),
        ("os.system", "expected a name"),
        ("linear(x)", "literal"),
        ("linear(5)\ntanh", "one line"),
    ],
)
def test_malformed_specs_fail_with_one_line(text: str, fragment: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_list(text, "model")
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message
    assert message.startswith("model:")


def test_error_points_at_the_offending_column() -> None:
    with pytest.raises(SpecError, match=r"at column 11 \(','\)"):
        parse_list("linear(5),, tanh", "model")


def test_parse_one_rejects_several() -> None:
    with pytest.raises(SpecError, match="expected one component"):
        parse("adamw, sgd", "optimizer")
