"""The published reference tables: shipped inside the package, every special cell kept with
its kind and unit, looked up by pipeline, batch size, compile on/off and torch column."""

from __future__ import annotations

import csv
import io
import math
from importlib import resources
from pathlib import Path

import pytest
from sdtop.profiler.report import reference as ref
from sdtop.profiler.report.summary import Row

ROOT = Path(__file__).resolve().parent.parent
SEED_CSV = ROOT.parent / "shared" / "seed" / "reference_tables.csv"
SHIPPED = resources.files("sdtop.profiler.report").joinpath("data", "reference_tables.csv")
SHIPPED_TEXT = SHIPPED.read_text(encoding="utf-8")
VALUE_COLUMNS = {
    "torch2.0_no_compile": ("2.0", False),
    "torch_nightly_no_compile": ("nightly", False),
    "torch2.0_compile": ("2.0", True),
    "torch_nightly_compile": ("nightly", True),
}


@pytest.fixture(scope="module")
def seed() -> ref.ReferenceTable:
    return ref.load("seed")


def test_the_shipped_copy_is_the_seed_file() -> None:
    if not SEED_CSV.is_file():
        pytest.skip("the seed directory is not beside this checkout")
    assert SEED_CSV.read_text(encoding="utf-8") == SHIPPED_TEXT


def test_the_data_file_is_package_data() -> None:
    """pyproject's [tool.setuptools.package-data] ships it (read as text: tomllib is 3.11+)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    assert '"sdtop.profiler.report" = ["data/*.csv"]' in section


def test_every_published_cell_is_kept_verbatim(seed: ref.ReferenceTable) -> None:
    """Round trip: each cell of the file is in the table, with its exact text."""
    raw = list(csv.DictReader(io.StringIO(SHIPPED_TEXT)))
    assert len(seed.entries) == 4 * len(raw)
    for line in raw:
        for column, (torch, compiled) in VALUE_COLUMNS.items():
            value = seed.get(line["gpu"], line["pipeline"], int(line["batch_size"]), compiled=compiled, torch=torch)
            assert value is not None
            assert value.text == line[column]
            assert value.kind in ref.KINDS


def test_gpus_and_batch_sizes_in_published_order(seed: ref.ReferenceTable) -> None:
    assert seed.gpus == ("A100", "V100", "T4", "RTX 3090", "RTX 4090")
    assert seed.batch_sizes == (1, 4, 16)


@pytest.mark.parametrize(
    ("gpu", "batch", "pipeline", "torch", "compiled", "kind", "text"),
    [
        ("A100", 1, "sd-txt2img", "2.0", True, ref.RATE, "44.03"),
        ("A100", 1, "sdxl-txt2img", "nightly", False, ref.RATE, "9.9"),  # not "9.90"
        ("A100", 1, "if-cascade", "2.0", False, ref.STAGES, "20.21 / 13.84 / 24.00"),
        ("A100", 1, "if-cascade", "2.0", True, ref.NOT_SUPPORTED, "not supported"),
        ("A100", 1, "sdxl-txt2img", "2.0", True, ref.NOT_MEASURED, "-"),
        ("V100", 16, "sd-controlnet", "2.0", True, ref.OOM, "OOM after warmup"),
        ("T4", 16, "sd-txt2img", "2.0", True, ref.OOM, "OOM after 2nd iteration"),
        ("T4", 16, "sdxl-txt2img", "nightly", False, ref.OOM, "OOM"),
        ("T4", 16, "sd-txt2img", "2.0", False, ref.SEC_PER_IT, "2.34s"),
        ("T4", 16, "if-cascade", "nightly", True, ref.RATE, "1.94"),  # IF at T4/16 is it/s
        ("T4", 4, "sdxl-txt2img", "2.0", False, ref.RATE, "0.288"),
    ],
)
def test_special_cells(
    seed: ref.ReferenceTable, gpu: str, batch: int, pipeline: str, torch: str, compiled: bool, kind: str, text: str
) -> None:
    value = seed.get(gpu, pipeline, batch, compiled=compiled, torch=torch)
    assert value is not None
    assert (value.kind, value.text) == (kind, text)


def test_seconds_per_iteration_keeps_its_unit_and_converts_only_on_request() -> None:
    v = ref.parse_cell("2.34s")
    assert v.unit == "s/it" and v.figures == (2.34,) and v.converted
    assert v.it_per_s() == pytest.approx(1 / 2.34)
    assert v.display() == "0.427 it/s (2.34s)"
    assert ref.published_note([None, v]) is not None
    assert ref.published_note([ref.parse_cell("2.34")]) is None


def test_rates_and_stage_parts() -> None:
    rate = ref.parse_cell("44.03")
    assert rate.unit == "it/s" and rate.it_per_s() == 44.03 and not rate.converted
    triple = ref.parse_cell("97.34 / 27.23 / 111.66")
    assert triple.it_per_s() is None  # three figures: ask for a stage
    assert [triple.for_stage(s).text for s in ("I", "II", "upscaler")] == ["97.34", "27.23", "111.66"]
    assert triple.for_stage("II").it_per_s() == 27.23
    # a single figure is stage I's (if-cascade above batch 1); later stages were not run
    assert ref.parse_cell("25.02").for_stage("I").text == "25.02"
    assert ref.parse_cell("25.02").for_stage("II").kind == ref.NOT_MEASURED
    # a status is the whole cell's
    assert ref.parse_cell("not supported").for_stage("II").text == "not supported"
    assert ref.parse_cell("OOM after warmup").for_stage("main").kind == ref.OOM
    for text in ("OOM", "not supported", "-"):
        assert ref.parse_cell(text).it_per_s() is None and ref.parse_cell(text).unit is None


@pytest.mark.parametrize("text", ["fast", "1 / 2", "12.5 it/s", "", "nan", "1,5"])
def test_unrecognised_cells_are_errors_not_nan(text: str) -> None:
    with pytest.raises(ref.ReferenceError, match="unrecognised published cell"):
        ref.parse_cell(text)


def test_lookup_for_a_cell_of_every_gpu(seed: ref.ReferenceTable) -> None:
    found = seed.lookup("sd-txt2img", 1, compiled=False, torch="2.0")
    assert {g: v.text if v else None for g, v in found.items()} == {
        "A100": "21.66",
        "V100": "18.99",
        "T4": "6.9",
        "RTX 3090": "22.56",
        "RTX 4090": "40.5",
    }
    # no SDXL rows for V100 and RTX 3090; no batch size 2 anywhere
    sdxl = seed.lookup("sdxl-txt2img", 1, compiled=False, torch="nightly")
    assert sdxl["V100"] is None and sdxl["RTX 3090"] is None and sdxl["A100"] is not None
    assert set(seed.lookup("sd-txt2img", 2, compiled=False, torch="2.0").values()) == {None}


def test_for_row_uses_stage_compile_and_the_rows_torch(seed: ref.ReferenceTable) -> None:
    row = Row(
        cell=0, pipeline="if-cascade", stage="II", compile_mode="default", batch_size=1, torch_version="2.5.1+cu124"
    )
    found = seed.for_row(row)  # torch 2.5 -> nightly column; compiled
    assert found["A100"] is not None and found["A100"].text == "27.23"
    assert seed.for_row(row, torch="2.0")["A100"].text == "not supported"  # type: ignore[union-attr]
    plain = Row(cell=0, pipeline="sd-txt2img", stage="main", compile_mode="none", batch_size=16, torch_version="2.0.1")
    t4 = seed.for_row(plain)["T4"]
    assert t4 is not None and t4.text == "2.34s" and t4.converted


@pytest.mark.parametrize(
    ("version", "column"),
    [
        ("2.0.1+cu118", "2.0"),
        ("1.13.1", "2.0"),
        ("2.1.0.dev20230601", "nightly"),
        ("2.13.0+cpu", "nightly"),
        (None, "2.0"),
        ("", "2.0"),
        ("garbage", "2.0"),
    ],
)
def test_torch_column_for(version: str | None, column: str) -> None:
    assert ref.torch_column_for(version) == column


@pytest.mark.parametrize(
    ("device", "gpu"),
    [
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("Tesla V100-SXM2-16GB", "V100"),
        ("Tesla T4", "T4"),
        ("NVIDIA GeForce RTX 3090", "RTX 3090"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA H100 80GB HBM3", None),
        ("CPU", None),
        (None, None),
    ],
)
def test_gpu_for_device(device: str | None, gpu: str | None, seed: ref.ReferenceTable) -> None:
    assert ref.gpu_for_device(device, seed.gpus) == gpu


def test_a_custom_reference_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text(",".join(ref.CSV_COLUMNS) + "\nH100,1,sd-txt2img,70.1,71.2,120.5,OOM\n")
    table = ref.load(str(path))
    assert table.gpus == ("H100",)
    assert table.get("H100", "sd-txt2img", 1, compiled=True, torch="nightly") == ref.Published("OOM", ref.OOM)
    assert math.isclose(table.lookup("sd-txt2img", 1, compiled=True, torch="2.0")["H100"].it_per_s() or 0, 120.5)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gpu,batch,pipeline\n", "the header must be"),
        (",".join(ref.CSV_COLUMNS) + "\n", "has no rows"),
        (",".join(ref.CSV_COLUMNS) + "\nH100,one,sd-txt2img,1,1,1,1\n", "line 2: batch_size 'one'"),
        (",".join(ref.CSV_COLUMNS) + "\nH100,1,sd-txt2img,1,1,1\n", "line 2: 6 fields"),
        (",".join(ref.CSV_COLUMNS) + "\nH100,1,sd-txt2img,1,fast,1,1\n", "line 2: unrecognised published cell 'fast'"),
    ],
)
def test_bad_reference_files_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ref.ReferenceError, match=message) as info:
        ref.load(str(path))
    assert "\n" not in str(info.value)


def test_unknown_reference_name() -> None:
    with pytest.raises(ref.ReferenceError, match="unknown reference 'nope'; valid: seed or a CSV file"):
        ref.load("nope")


def test_caveats_name_what_is_not_like_for_like() -> None:
    rows = [Row(cell=0, pipeline="sd-txt2img", stage="main", weights="tiny", dtype="fp32", device="cpu")]
    assert ref.caveats(rows) == [
        "tiny weights are not the published models",
        "fp32 (published: fp16)",
        "device cpu (published: CUDA GPUs)",
    ]
    assert ref.caveats([Row(cell=0, pipeline="x", stage="main", weights="hub", dtype="fp16", device="cuda")]) == []
