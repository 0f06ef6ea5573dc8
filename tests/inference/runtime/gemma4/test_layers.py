"""The compiled layers' inductor options (layers.compile_options, PersistentRows)."""

from __future__ import annotations

import sympy
import torch
from torch._inductor.runtime.hints import ReductionHint

from inference.runtime.gemma4.layers import PersistentRows, compile_options


class Features:
    """What inductor's kernel features tell the choice: the reduction's kind and length."""

    def __init__(self, numel, hint: ReductionHint) -> None:
        self.reduction_numel, self.hint = numel, hint

    def get_reduction_hint(self) -> ReductionHint:
        return self.hint


def test_rows_up_to_the_limit_are_persistent_reductions() -> None:
    choices = PersistentRows(4096)
    for numel in (1152, 2816, 4096):  # the vision tower's rows, the text layers', the limit
        assert choices.should_use_persistent_reduction(
            Features(sympy.Integer(numel), ReductionHint.INNER), False
        )
    assert choices.uuid() == "travelbot-persistent-rows-4096"


def test_options_only_for_inductor_and_when_asked() -> None:
    assert compile_options("inductor", 0) is None
    assert compile_options("eager", 4096) is None
    factory = compile_options("inductor", 2048)["inductor_choices_class"]
    assert isinstance(factory(), PersistentRows) and factory().limit == 2048


def test_a_compile_with_the_options_gives_the_same_norms() -> None:
    """The option goes through torch.compile to inductor, which makes its choices object
    (and asks its uuid() for the cache key)."""

    def norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.rms_norm(x + 1, (x.shape[-1],), weight)

    options = compile_options("inductor", 4096)
    factory, made = options["inductor_choices_class"], []
    options["inductor_choices_class"] = lambda: made.append(factory()) or made[-1]
    x, weight = torch.randn(6, 1152), torch.randn(1152)
    compiled = torch.compile(norm, backend="inductor", options=options)
    torch.testing.assert_close(compiled(x, weight), norm(x, weight))
    assert made and all(isinstance(c, PersistentRows) and c.limit == 4096 for c in made)
