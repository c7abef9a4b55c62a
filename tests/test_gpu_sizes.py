"""One size, one meaning (issue 12, defect 8), and the hub preflight (7c, 7d), without a GPU.

``--height``/``--width``/``--resolutions`` are the size of the image a cell produces, for
every pipeline: IF's stages run at 1/16, 1/4 and 1/1 of it. These are the rules a GPU run
would otherwise discover late (a stage too small for its UNet fails deep in a worker, or a
``--height 512`` IF cell silently runs its upscaler at 8192 px). The hub checks read a fake
cache folder: nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sdtop.pipelines import hub, registry
from sdtop.pipelines.settings import BadInput, CellSpec, MatrixSpec, expand
from sdtop.profiler.contract.events import (
    CallFinished,
    CellFinished,
    CellStarted,
    Event,
    PhaseStarted,
    StageTimed,
    StepTimed,
)
from sdtop.profiler.report import summary
from sdtop.tui import cli


def stage_sizes(cell: CellSpec) -> list[tuple[str, int, int]]:
    return [
        (st.name, *registry.stage_size(st, cell.height, cell.width))
        for st in registry.stages_for(cell.pipeline, cell.batch_size)
    ]


# --- expand: what each stage runs at -----------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "image", "stage_i", "stage_ii"),
    [("random", 1024, 64, 256), ("hub", 1024, 64, 256), ("tiny", 256, 16, 64)],
)
def test_if_cascade_natively_makes_its_published_image(weights: str, image: int, stage_i: int, stage_ii: int) -> None:
    (cell,) = expand(MatrixSpec(pipelines=("if-cascade",), weights=(weights,)), cuda_available=False)
    assert (cell.height, cell.width) == (image, image)
    assert stage_sizes(cell) == [("I", stage_i, stage_i), ("II", stage_ii, stage_ii), ("upscaler", image, image)]


def test_a_given_size_is_the_image_for_every_pipeline() -> None:
    m = MatrixSpec(pipelines=("sd-txt2img", "if-cascade"), weights=("random",), height=2048, width=1024)
    sd, cascade = expand(m, cuda_available=False)
    assert stage_sizes(sd) == [("main", 2048, 1024)]
    assert stage_sizes(cascade) == [("I", 128, 64), ("II", 512, 256), ("upscaler", 2048, 1024)]


def test_resolutions_follow_the_same_meaning() -> None:
    m = MatrixSpec(pipelines=("if-cascade",), weights=("random",), resolutions=((1024, 1024), (2048, 2048)))
    (cell,) = expand(m, cuda_available=False)
    assert cell.sizes == ((1024, 1024), (2048, 2048))
    assert [registry.stage_size(registry.get("if-cascade").stages[0], h, w) for h, w in cell.sizes] == [
        (64, 64),
        (128, 128),
    ]


def test_above_batch_1_the_cascade_runs_stage_i_at_its_share() -> None:
    (cell,) = expand(MatrixSpec(pipelines=("if-cascade",), weights=("random",), batch_sizes=(4,)), cuda_available=False)
    assert stage_sizes(cell) == [("I", 64, 64)]


def test_tiny_weights_keep_their_small_native_sizes() -> None:
    cells = expand(MatrixSpec(weights=("tiny",)), cuda_available=False)
    assert {c.pipeline: (c.height, c.width) for c in cells} == {
        "sd-txt2img": (64, 64),
        "sd-img2img": (64, 64),
        "sd-inpaint": (64, 64),
        "sd-controlnet": (64, 64),
        "if-cascade": (256, 256),
        "sdxl-txt2img": (64, 64),
        "sd3-txt2img": (32, 32),
        "flux-txt2img": (32, 32),
        "qwen-image": (32, 32),
        "wan-t2v": (32, 32),
    }


# --- refusals --------------------------------------------------------------------------------------


def test_a_size_too_small_for_stage_i_is_one_line_naming_the_smallest() -> None:
    m = MatrixSpec(pipelines=("sd-txt2img", "if-cascade"), weights=("random",), height=512)
    with pytest.raises(BadInput) as exc:
        expand(m, cuda_available=False)
    assert str(exc.value) == (
        "--height 512 is too small for if-cascade (random weights): stage I at 32 px, below the 64 px "
        "its model allows; the smallest valid --height for if-cascade is 1024"
    )


def test_a_size_whose_stage_i_is_not_a_multiple_of_8_is_refused() -> None:
    with pytest.raises(
        BadInput, match=r"--width 1088 for if-cascade: .* use a multiple of 128 \(smallest valid: 1024\)"
    ):
        expand(MatrixSpec(pipelines=("if-cascade",), weights=("random",), width=1088), cuda_available=False)


def test_resolutions_are_refused_by_name_too() -> None:
    m = MatrixSpec(pipelines=("if-cascade",), weights=("tiny",), resolutions=((256, 256), (128, 128)))
    with pytest.raises(BadInput, match=r"^--resolutions 128 is too small for if-cascade \(tiny weights\): stage I"):
        expand(m, cuda_available=False)


def test_the_cli_refuses_before_anything_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s"
    argv = ["run", "--pipeline", "sd-txt2img,if-cascade", "--weights", "tiny", "--height", "128", "--out", str(out)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "sdtop: error: --height 128 is too small for if-cascade (tiny weights): stage I at 8 px, below the 16 px "
        "its model allows; the smallest valid --height for if-cascade is 256"
    ]
    assert not out.exists()


def test_an_sd_size_below_its_latent_minimum_is_refused() -> None:
    with pytest.raises(BadInput, match="smallest valid --height for sd-txt2img is 64"):
        expand(MatrixSpec(pipelines=("sd-txt2img",), weights=("random",), height=32), cuda_available=False)
    (cell,) = expand(MatrixSpec(pipelines=("sd-txt2img",), weights=("tiny",), height=32), cuda_available=False)
    assert cell.height == 32  # the tiny UNet halves its 4 px latent once: fine


# --- the summary rows show each stage's own size ------------------------------------------------------


def _cascade_cell(cell: int, spec: CellSpec, *, ran: bool) -> list[Event]:
    out: list[Event] = [
        CellStarted(cell=cell, settings=spec.to_dict()),
        PhaseStarted(cell=cell, phase="measure", height=spec.height, width=spec.width),
    ]
    if ran:
        for name, h, w in stage_sizes(spec):
            out += [StepTimed(cell=cell, call=0, call_kind="measured", stage=name, step=0, ms=10.0)]
            out += [
                StageTimed(cell=cell, call=0, call_kind="measured", stage=name, steps=1, loop_s=0.01, height=h, width=w)
            ]
        out.append(
            CallFinished(cell=cell, call=0, call_kind="measured", wall_s=0.1, height=spec.height, width=spec.width)
        )
    out.append(CellFinished(cell=cell, status="ok" if ran else "OOM during load"))
    return out


def test_rows_show_each_stage_at_its_real_size() -> None:
    spec = expand(MatrixSpec(pipelines=("if-cascade",), weights=("random",)), cuda_available=False)[0]
    failed = CellSpec("if-cascade", weights="random", height=2048, width=2048)
    rows = summary.rows([*_cascade_cell(0, spec, ran=True), *_cascade_cell(1, failed, ran=False)])
    got = [(r.cell, r.stage, r.height, r.width, r.stage_height, r.stage_width) for r in rows]
    assert got == [
        (0, "I", 1024, 1024, 64, 64),
        (0, "II", 1024, 1024, 256, 256),
        (0, "upscaler", 1024, 1024, 1024, 1024),
        # no stage reported a size: the registry's share of the cell's image
        (1, "I", 2048, 2048, 128, 128),
        (1, "II", 2048, 2048, 512, 512),
        (1, "upscaler", 2048, 2048, 2048, 2048),
    ]
    csv_header = summary.to_csv(rows).splitlines()[0].split(",")
    at = csv_header.index("stage_height")
    assert csv_header[at : at + 2] == ["stage_height", "stage_width"] and csv_header[at - 1] == "host_peak_rss_mib"


# --- 7c, 7d: the hub's removed ids, and models not on this disk ------------------------------------------


def fake_snapshot(cache: Path, repo_id: str, filename: str = "model_index.json") -> None:
    snap = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (snap / filename).write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))


def test_the_seed_ids_are_aliases_of_their_maintained_copies() -> None:
    assert registry.get("sd-txt2img").checkpoint == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert registry.get("sd-inpaint").checkpoint == "stable-diffusion-v1-5/stable-diffusion-inpainting"
    assert registry.canonical_model("runwayml/stable-diffusion-v1-5") == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert registry.canonical_model("RunwayML/Stable-Diffusion-Inpainting") == registry.get("sd-inpaint").checkpoint
    assert registry.canonical_model("someone/else") == "someone/else"
    m = MatrixSpec(pipelines=("sd-txt2img",), weights=("hub",), model="runwayml/stable-diffusion-v1-5")
    (cell,) = expand(m, cuda_available=False)
    assert m.model == "runwayml/stable-diffusion-v1-5"  # the matrix records what was typed
    assert cell.model == "stable-diffusion-v1-5/stable-diffusion-v1-5"  # the cell what is loaded


def test_the_cache_folder_honours_the_hub_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hub.cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert hub.cache_dir() == tmp_path / "c"


def test_preflight_passes_cached_models_and_names_missing_ones(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    fake_snapshot(tmp_path, "stable-diffusion-v1-5/stable-diffusion-v1-5")
    sd = CellSpec("sd-txt2img", weights="hub")
    hub.preflight([sd, CellSpec("sd-txt2img", weights="tiny")])  # cached: nothing to say
    hub.preflight([CellSpec("sd-txt2img", weights="hub", model="runwayml/stable-diffusion-v1-5")])  # the alias
    controlnet = CellSpec("sd-controlnet", weights="hub")
    assert hub.missing([sd, controlnet]) == ["lllyasviel/sd-controlnet-canny"]
    fake_snapshot(tmp_path, "lllyasviel/sd-controlnet-canny", "config.json")
    assert hub.missing([sd, controlnet]) == []
    with pytest.raises(BadInput) as exc:
        hub.preflight([sd, CellSpec("sdxl-txt2img", weights="hub")])
    assert str(exc.value) == (
        f"--weights hub: 'stabilityai/stable-diffusion-xl-base-1.0' is not on this disk (not in the local hub "
        f"cache {tmp_path}); nothing was run: use --weights random or tiny, or download it first "
        "(huggingface-cli download ID)"
    )


def test_a_local_model_directory_needs_a_model_index(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        BadInput, match=r"'.*empty' is not on this disk \(a local --model directory needs a model_index"
    ):
        hub.preflight([CellSpec("sd-txt2img", weights="hub", model=str(empty))])
    (empty / "model_index.json").write_text("{}")
    hub.preflight([CellSpec("sd-txt2img", weights="hub", model=str(empty))])
    # IF: one sub-directory per stage, or the directory for stage I and the registry after it
    cascade = tmp_path / "if"
    for stage in ("I", "II", "upscaler"):
        (cascade / stage).mkdir(parents=True)
        (cascade / stage / "model_index.json").write_text("{}")
    hub.preflight([CellSpec("if-cascade", weights="hub", model=str(cascade))])


def test_the_cli_refuses_a_missing_hub_model_before_any_worker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--pipeline`` given: the cells do not depend on the worker host, so the refusal
    comes before it starts (a launcher that is asked anything fails the test)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    from sdtop.profiler.host import runner

    def no_host(*_: object, **__: object) -> object:
        raise AssertionError("the worker host was started")

    monkeypatch.setattr(runner, "start_host", no_host)
    out = tmp_path / "s"
    argv = ["run", "--pipeline", "sd-txt2img", "--weights", "hub,tiny", "--steps", "1", "--out", str(out)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "sdtop: error: --weights hub: 'stable-diffusion-v1-5/stable-diffusion-v1-5'"
    )
    assert "use --weights random or tiny, or download it first" in err[0]
    assert not out.exists()
