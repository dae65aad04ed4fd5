"""The method registry: every list of methods is read from it, and it is read from the method files."""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

import pytest

from contrastive_decoding import decoding
from contrastive_decoding.decoding import (
    AMATEUR_METHODS,
    CONDITION_METHODS,
    CONTEXT_FREE_METHODS,
    IMAGE_METHODS,
    METHOD_CONFIGS,
    registry,
)
from contrastive_decoding.decoding.spec import MethodSpec, ScoringSupport, VllmSupport
from contrastive_decoding.method_call import MethodCall, method_call

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_method_table_is_the_registry_table():
    text = README.read_text()
    match = re.search(r"<!-- methods table:[^\n]*-->\n(.*?)<!-- end of methods table -->", text, re.S)
    assert match, "README lost its methods table markers"
    assert match.group(1).strip() == registry.markdown_table()


def test_every_method_is_listed_once_in_order_with_plain_first():
    names = registry.names()
    assert names[0] == registry.PLAIN
    assert len(names) == len(set(names))
    assert set(names) == set(METHOD_CONFIGS)
    assert list(METHOD_CONFIGS) == list(names)


def test_aliases_resolve_and_unknown_names_get_a_did_you_mean():
    assert registry.resolve("greedy") == "plain"
    assert METHOD_CONFIGS["greedy"] is METHOD_CONFIGS["plain"]
    assert decoding.check_method("greedy") == "plain"
    with pytest.raises(ValueError, match="Did you mean 'dola'"):
        registry.get_spec("dolla")
    with pytest.raises(KeyError, match="Unknown method"):
        METHOD_CONFIGS["dolla"]


def test_derived_sets_agree_with_the_specs():
    for spec in registry.specs():
        assert (spec.name in CONTEXT_FREE_METHODS) == spec.takes(registry.CONTEXT_FREE_PROMPT)
        assert (spec.name in CONDITION_METHODS) == spec.takes(registry.CONDITIONS)
        assert (spec.name in IMAGE_METHODS) == spec.takes(registry.IMAGE)
        assert (spec.name in AMATEUR_METHODS) == (registry.AMATEUR in spec.needs)
    assert "layer_fusion" in registry.taking(registry.AMATEUR)  # optional amateur
    assert "layer_fusion" not in AMATEUR_METHODS


def test_every_spec_points_at_real_code():
    for spec in registry.specs():
        assert dataclasses.is_dataclass(spec.config) and spec.config.__dataclass_params__.frozen, spec.name
        spec.config()  # the defaults validate
        if spec.generates:
            assert callable(registry.load(spec.hf_function)), spec.name
        else:  # scoring-only: no generate callable, a choice scorer, never on vLLM
            assert spec.hf_function is None and not spec.vllm.served, spec.name
            assert callable(registry.load(spec.scoring.choice_scorer)), spec.name
        if spec.vllm.pair_scores is not None:
            assert callable(registry.load(spec.vllm.pair_scores)), spec.name
        if not spec.vllm.served:
            assert spec.vllm.reason
        if not spec.scoring.scores:
            assert spec.scoring.reason
        for key, _ in spec.scoring.choice_defaults:
            assert key == "normalize" or key in decoding.method_parameters(spec.name), (spec.name, key)


def test_drop_in_module_exports_every_method():
    import contrastive_decoding as cd

    for spec in registry.specs():
        if not spec.generates:
            assert not hasattr(cd.hf, spec.name), spec.name  # nothing to drop into generate
            continue
        assert getattr(cd.hf, spec.name) is registry.load(spec.hf_function)
    assert cd.hf.greedy is cd.hf.plain
    with pytest.raises(AttributeError):
        cd.hf.not_a_method  # noqa: B018


def test_vllm_method_lists_come_from_the_registry():
    from contrastive_decoding.backends.vllm import requests

    assert set(requests.VLLM_METHODS) == {spec.name for spec in registry.specs() if spec.vllm.served}
    assert requests.PAIR_METHODS == registry.vllm_runs(registry.VLLM_PAIR)
    request, _ = requests.parse_extra_args({"method": "greedy"})
    assert request.method == "plain"
    with pytest.raises(ValueError, match="not supported by the vLLM backend yet"):
        requests.parse_extra_args({"method": "vcd"})


def test_method_call_is_built_once_and_passes_through():
    call = method_call("dola", dola_layers="low", repetition_penalty=1.2)
    assert isinstance(call, MethodCall) and call.name == "dola" and call.config.dola_layers == "low"
    assert call.sampling == {"repetition_penalty": 1.2}
    assert method_call(call) is call
    with pytest.raises(ValueError, match="beside a MethodCall"):
        method_call(call, relative_top=0.2)
    assert method_call("greedy").label == "greedy" and method_call("greedy").name == "plain"
    with pytest.raises(ValueError, match="deterministic"):
        method_call("contrastive_search", do_sample=True)
    with pytest.raises(ValueError, match="repetition_penalty must be"):
        method_call("dola", repetition_penalty=0)


@pytest.mark.parametrize(
    "method", ["contrastive_search", "condition_contrast", "vcd", "contextual_calibration", "posthoc_debias"]
)
def test_score_refuses_methods_that_cannot_score_before_touching_the_model(method):
    from contrastive_decoding.scoring import score

    with pytest.raises(ValueError, match=f"{method} cannot score continuations"):
        score(None, None, ["a"], [" b"], method=method)


def test_a_new_method_file_is_picked_up(tmp_path, monkeypatch):
    """Adding a method is adding a file: the registry finds its SPECS without any list being edited."""
    package = tmp_path / "contrastive_decoding_toy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "toy.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass
            from contrastive_decoding.decoding.spec import VLLM_NO, MethodSpec, ScoringSupport, VllmSupport

            @dataclass(frozen=True)
            class ToyConfig:
                toy_strength: float = 0.5

            def toy_generate(*args, **kwargs):
                return "toy"

            SPECS = (
                MethodSpec(
                    name="toy",
                    config=ToyConfig,
                    contrasts="nothing, it is a toy",
                    paper="-",
                    hf_function="contrastive_decoding_toy.toy:toy_generate",
                    vllm=VllmSupport(VLLM_NO, "a toy"),
                    scoring=ScoringSupport(False, "a toy"),
                ),
            )
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "decoding_extra").mkdir()
    (tmp_path / "decoding_extra" / "toy.py").write_text(
        "from contrastive_decoding_toy.toy import *  # noqa\n"
    )
    monkeypatch.setattr(decoding, "__path__", [*decoding.__path__, str(tmp_path / "decoding_extra")])
    registry._collect.cache_clear()
    try:
        assert "toy" in registry.names()
        assert decoding.make_method_config("toy", toy_strength=0.1).toy_strength == 0.1
        import contrastive_decoding as cd

        assert cd.hf.toy() == "toy"
    finally:
        monkeypatch.undo()
        registry._collect.cache_clear()
    assert "toy" not in registry.names()


def test_scoring_only_methods_are_refused_by_generate_and_vllm_with_the_reason():
    from contrastive_decoding.api import generate_outputs
    from contrastive_decoding.backends.vllm import requests

    assert registry.scoring_only() == {"contextual_calibration", "posthoc_debias"}
    for method in registry.scoring_only():
        with pytest.raises(ValueError, match=f"{method} does not generate .a scoring-only method"):
            generate_outputs(None, None, ["a"], method)  # refused before the model is touched
        with pytest.raises(ValueError, match=f"'{method}' does not generate .a scoring-only method"):
            requests.parse_extra_args({"method": method})
        assert method not in requests.VLLM_METHODS
    assert registry.check_generates("greedy") == "plain"
    table = registry.markdown_table()
    assert "| `posthoc_debias` |" in table and "scoring only (choice tasks) | no (scoring only)" in table


def test_spec_validation_catches_malformed_declarations():
    with pytest.raises(ValueError, match="needs a reason"):
        VllmSupport("no")
    with pytest.raises(ValueError, match="pair_scores"):
        VllmSupport("pair")
    with pytest.raises(ValueError, match="needs a reason"):
        ScoringSupport(False)
    with pytest.raises(ValueError, match="choice_scorer"):
        ScoringSupport(True, choice_scorer="m:f")  # no reason why score() refuses it
    with pytest.raises(ValueError, match="scoring-only"):
        MethodSpec(
            "x", object, "-", "-", "m:f", VllmSupport("no", "r"), ScoringSupport(True), generates=False
        )
    with pytest.raises(ValueError, match="unknown input"):
        MethodSpec(
            "x",
            object,
            "-",
            "-",
            None,
            VllmSupport("plain"),
            ScoringSupport(True),
            needs=frozenset({"picture"}),
        )
