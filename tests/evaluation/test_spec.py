"""EvalSpec: defaults, validation and the claim / resume file names."""
from __future__ import annotations

import pytest

from robustscale.errors import UserError
from robustscale.evaluation import EvalSpec, eps_text


def test_defaults_and_names():
    pgd = EvalSpec.create("pgd", "8/255")
    assert (pgd.steps, pgd.restarts) == (10, 1)
    assert pgd.step_size == pytest.approx(2.5 * (8 / 255) / 10)
    assert (pgd.label, pgd.file_stem, pgd.threat_model) == ("pgd10", "pgd10-8_255", "Linf")
    aa = EvalSpec.create("AA-Standard", 0.0314)
    assert (aa.stages, aa.file_stem) == (("apgd-ce", "apgd-t", "fab-t", "square"), "aa-standard-0.0314")
    assert EvalSpec.create("apgd-ce").steps == 100 and EvalSpec.create("apgd-ce").label == "apgd-ce"
    assert EvalSpec.create("apgd-ce", steps=50, restarts=2).label == "apgd-ce50x2"
    l2 = EvalSpec.create("pgd", norm="l2", steps=20, restarts=3)
    assert (l2.eps, l2.file_stem, l2.threat_model) == (0.5, "pgd20x3-l2-0.5", "L2")
    assert EvalSpec.create("aa-rand").stages == ("apgd-ce", "apgd-dlr")
    assert EvalSpec.create("clean", eps=5).file_stem == "clean"  # eps is irrelevant for clean
    assert [eps_text(e) for e in (8 / 255, 4 / 255, 0.1, 1.0, 0.03137)] == ["8/255", "4/255", "0.1", "255/255",
                                                                            "0.03137"]


@pytest.mark.parametrize("kwargs, needle", [
    ({"attack": "pgd", "eps": 0}, "invalid eps 0.0"),
    ({"attack": "pgd", "eps": "2"}, "invalid eps 2.0"),
    ({"attack": "pgd", "eps": -0.1}, "invalid eps -0.1"),
    ({"attack": "pgd", "steps": 0}, "invalid steps 0"),
    ({"attack": "pgd", "steps": "2.5"}, "invalid steps '2.5'"),
    ({"attack": "pgd", "restarts": 0}, "invalid restarts 0"),
    ({"attack": "pgd", "step_size": 3}, "invalid step_size 3.0"),
    ({"attack": "apgd-ce", "step_size": 0.1}, "--step-size does not apply to attack apgd-ce"),
    ({"attack": "aa-rand", "restarts": 2}, "--restarts does not apply to attack aa-rand"),
    ({"attack": "apgd-ce", "amp": "bf16"}, "--amp bf16 is refused for apgd-ce"),
    ({"attack": "pgd", "amp": "int8"}, "unknown amp 'int8'"),
    ({"attack": "cw"}, "unknown attack 'cw'"),
])
def test_validation(kwargs, needle):
    with pytest.raises(UserError) as err:
        EvalSpec.create(**kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)
