"""The second wave's matrix axes: parsing, one message per bad value, no duplicate cells,
and which cell is each cell's baseline. Stdlib only (no worker, no torch)."""

from __future__ import annotations

import dataclasses

import pytest
from sdtop.pipelines import registry, settings
from sdtop.pipelines.settings import BadInput, CellSpec, MatrixSpec, baselines, expand, parse_matrix


def _cells(**texts: str) -> list[CellSpec]:
    m = parse_matrix({f"--{k.replace('_', '-')}": v for k, v in texts.items()})
    return expand(m, cuda_available=False)


def test_the_done_when_matrix_b_has_no_duplicate_cells() -> None:
    """An uncompiled cell cannot differ by scope: 1 + 2 compile variants x 2 quant x 2 cache."""
    cells = _cells(
        pipeline="flux-txt2img", weights="tiny", steps="4", compile="none,default", compile_backend="eager",
        compile_scope="whole,regional", quant="none,int8wo", cache="none,fbc:0.2",
    )  # fmt: skip
    assert len(cells) == 12
    keys = {(c.compile_mode, c.compile_scope, c.quant, c.cache) for c in cells}
    assert len(keys) == 12
    assert {c.compile_scope for c in cells if not c.compiled} == {"whole"}
    assert {c.compile_scope for c in cells if c.compiled} == {"whole", "regional"}


def test_two_spellings_of_one_attention_make_one_cell_per_pipeline() -> None:
    cells = _cells(pipeline="flux-txt2img,sd-txt2img", weights="tiny", attention="sdpa,native,_native_math,sdpa-math")
    assert [(c.pipeline, c.attention) for c in cells] == [
        ("flux-txt2img", "sdpa"),
        ("flux-txt2img", "_native_math"),
        ("sd-txt2img", "sdpa"),
        ("sd-txt2img", "_native_math"),
    ]
    assert settings.canonical_attention("flux-txt2img", "sdpa") == "native"
    assert settings.canonical_attention("sd-txt2img", "_native_math") == "sdpa-math"
    assert settings.canonical_attention("sd-txt2img", "flex") == "flex"  # not supported there: the worker says so


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ({"--cache": "fbc"}, "fbc takes a threshold, e.g. fbc:0.2"),
        ({"--cache": "fbc:1.5"}, "the fbc threshold is a fraction between 0 and 1"),
        ({"--cache": "teacache"}, "unknown --cache value 'teacache'; valid: none, fbc:<threshold>"),
        ({"--cache": "pab:3"}, "pab takes no argument"),
        ({"--quant": "fp4"}, "unknown --quant value 'fp4'; valid: none, int8wo, int8dq, fp8dq, fp8wo"),
        ({"--compile-scope": "blocks"}, "unknown --compile-scope value 'blocks'; valid: whole, regional"),
        ({"--offload": "disk"}, "unknown --offload value 'disk'; valid: none, model, group"),
        ({"--fuse-qkv": "yes"}, "unknown --fuse-qkv value 'yes'; valid: off, on"),
        ({"--frames": "0"}, "--frames must be >= 1"),
        ({"--baseline": "x"}, "--baseline takes whole numbers >= 0"),
        ({"--attention": "flash4"}, "unknown --attention value 'flash4'; valid: sdpa, classic"),
    ],
)
def test_bad_values_get_one_line_naming_the_choices(texts: dict[str, str], message: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_matrix(texts)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_frames_follow_the_video_rule_and_images_have_none() -> None:
    cells = _cells(pipeline="wan-t2v,flux-txt2img", weights="tiny", frames="9")
    assert [(c.pipeline, c.frames) for c in cells] == [("wan-t2v", 9), ("flux-txt2img", 0)]
    native = _cells(pipeline="wan-t2v", weights="tiny")
    assert native[0].frames == registry.get("wan-t2v").native_frames["tiny"]
    with pytest.raises(BadInput, match="it makes 4k\\+1 frames"):
        _cells(pipeline="wan-t2v", weights="tiny", frames="8")


def test_dit_sizes_are_multiples_of_16() -> None:
    with pytest.raises(BadInput, match="use a multiple of 16"):
        _cells(pipeline="flux-txt2img", weights="random", height="1000")


def test_random_weights_take_a_published_variant_as_model() -> None:
    cells = _cells(pipeline="flux-txt2img", weights="random", model="black-forest-labs/flux.1-schnell")
    assert cells[0].model == "black-forest-labs/FLUX.1-schnell"
    with pytest.raises(BadInput, match=r"flux-txt2img's are: black-forest-labs/FLUX\.1-dev"):
        _cells(pipeline="flux-txt2img", weights="random", model="someone/flux-finetune")
    with pytest.raises(BadInput, match="sd-txt2img's are: none"):
        _cells(pipeline="sd-txt2img", weights="random", model="someone/sd")
    assert _cells(pipeline="flux-txt2img", weights="tiny")[0].model is None


def test_each_cell_s_baseline_is_the_first_lossless_cell_of_its_kind() -> None:
    cells = _cells(
        pipeline="flux-txt2img", weights="tiny", batch="1,2", quant="int8wo,none", cache="none,fbc:0.2",
        attention="sage,native",
    )  # fmt: skip
    base = baselines(cells)
    for cell, b in zip(cells, base, strict=True):
        assert b is not None
        ref = cells[b]
        assert ref.lossy() == [] and ref.batch_size == cell.batch_size
        # the first lossless cell in matrix order
        assert b == next(i for i, c in enumerate(cells) if not c.lossy() and c.batch_size == cell.batch_size)
    assert baselines(cells, override=3) == [3] * len(cells)


def test_a_kind_without_a_lossless_cell_has_no_baseline() -> None:
    cells = _cells(pipeline="flux-txt2img", weights="tiny", quant="int8wo")
    assert baselines(cells) == [None]
    assert cells[0].lossy() == ["quant int8wo"]


def test_baseline_out_of_range_is_refused_when_the_cells_are_known() -> None:
    with pytest.raises(BadInput, match="--baseline 5: the matrix has cells 0 to 1"):
        _cells(pipeline="flux-txt2img", weights="tiny", attention="native,_native_math", baseline="5")


def test_new_fields_round_trip_through_the_recorded_dicts() -> None:
    m = parse_matrix(
        {"--pipeline": "wan-t2v", "--weights": "tiny", "--quant": "none,int8dq", "--cache": "fbc:0.25,pab",
         "--fuse-qkv": "off,on", "--offload": "group", "--compile-scope": "regional", "--frames": "9",
         "--baseline": "0"},
        outputs="off",
    )  # fmt: skip
    assert MatrixSpec.from_dict(m.to_dict()) == m
    for cell in expand(m, cuda_available=False):
        assert CellSpec.from_dict(cell.to_dict()) == cell
    assert m.caches == ("fbc:0.25", "pab") and m.fuse_qkv == (False, True)


def test_the_label_names_the_levers_that_are_on() -> None:
    cell = dataclasses.replace(
        _cells(pipeline="wan-t2v", weights="tiny")[0], quant="int8wo", cache="fbc:0.2", fuse_qkv=True
    )
    label = cell.label()
    assert "quant=int8wo" in label and "cache=fbc:0.2" in label and "fuse_qkv=on" in label
    assert "offload" not in label and "32x32x5f" in label
