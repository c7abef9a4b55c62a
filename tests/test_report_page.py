"""Issue 16: ``sdtop report DIR`` writes one self-contained HTML page of a session.

Done when the page of every recorded fixture session (clean, oom, recompile, crashed,
unsupported, levers, profiled, lanes, and the pair clean + clean-a100) has every section,
each with the right cells (counted by ``data-cell``, against what the events say), loads
nothing over the network, and a 24-cell session with 1024² outputs stays under 3 MB. The
page is parsed with :mod:`html.parser`, never matched as text, so the tests read structure.
"""

from __future__ import annotations

import dataclasses
import html.parser
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from sdtop.pipelines.settings import CellSpec, MatrixSpec, expand
from sdtop.profiler.contract import events as ev
from sdtop.profiler.contract import status as st
from sdtop.profiler.host.session import SessionError, read_events
from sdtop.profiler.report import page, summary
from sdtop.profiler.report.fold import COMPILE_EVENTS
from sdtop.profiler.report.page import SECTIONS, ReportError, write_report
from sdtop.profiler.report.rows import rows
from sdtop.profiler.report.text import PROFILE_HINT
from sdtop.tui import cli
from sdtop.tui.models.summary import SummaryModel

from tests.fixtures.make_sessions import add_compiles, add_profile, add_telemetry
from tests.helpers_events import session_events

FIXTURES = Path(__file__).parent / "fixtures" / "sessions"
SESSIONS = ("clean", "oom", "recompile", "crashed", "unsupported", "levers", "profiled", "lanes")
SECTION_IDS = tuple(sid for sid, _ in SECTIONS)
#: Sections whose items are one per started cell, whatever happened to it.
EVERY_CELL = ("speed", "latency", "memory")
LIMIT_BYTES = 3_000_000


# --- reading a page -------------------------------------------------------------------------------


class Page(html.parser.HTMLParser):
    """What the tests read of a page: each section's cells and lines, every URL-bearing
    attribute, the tags that could load something, the stylesheet text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.order: list[str] = []
        self.cells: dict[str, set[int]] = {}
        self.none_lines: dict[str, list[str]] = {}
        self.text: dict[str, list[str]] = {}
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.style = ""
        self.figures: list[str] = []  # ids of the chart figures
        self.imgs: list[str] = []
        self._section: str | None = None
        self._in_none = False
        self._in_style = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag == "section":
            self._section = a.get("id", "?")
            self.order.append(self._section)
            self.cells.setdefault(self._section, set())
        if "data-cell" in a and self._section is not None:
            self.cells[self._section].add(int(a["data-cell"]))
        for key in ("src", "href", "xlink:href", "action", "data", "poster", "srcset", "background"):
            if key in a:
                self.urls.append((tag, key, a[key]))
        if tag == "p" and "none" in a.get("class", "").split():
            self._in_none = True
            self.none_lines.setdefault(self._section or "?", []).append("")
        if tag == "style":
            self._in_style = True
        if tag == "figure" and a.get("id", "").startswith("chart-"):
            self.figures.append(a["id"].removeprefix("chart-"))
        if tag == "img":
            self.imgs.append(a.get("src", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None
        if tag == "p":
            self._in_none = False
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style += data
        if self._section is not None:
            self.text.setdefault(self._section, []).append(data)
        if self._in_none:
            key = self._section or "?"
            self.none_lines[key][-1] += data

    def section_text(self, sid: str) -> str:
        return " ".join(self.text.get(sid, []))


def assert_loads_nothing(p: Page, raw: str) -> None:
    """No element fetches anything: every URL is a data: URI or a fragment, and nothing that
    loads (script, link, iframe, object, embed, base, a stylesheet import) is there."""
    for tag, key, value in p.urls:
        v = value.strip().lower()
        assert v.startswith(("data:", "#")), f"<{tag} {key}={value[:60]!r}> points outside the page"
        assert not v.startswith(("http:", "https:", "//"))
    loaders = {"script", "link", "iframe", "object", "embed", "base", "frame", "audio", "video", "source"}
    assert not [t for t, _ in p.tags if t in loaders]
    assert "@import" not in p.style and "url(" not in p.style
    assert not re.search(r"<script\b[^>]*\bsrc", raw, re.I)
    assert not re.search(r"""url\(\s*['"]?(https?:)?//""", raw, re.I)
    csp = [a.get("content", "") for t, a in p.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]


# --- what the events say the page must show --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Expected:
    started: set[int]
    compiled: set[int]
    profiled: set[int]
    outputs: set[int]
    failed: set[int]
    statuses: dict[int, str]


def expected(events: Sequence[ev.Event]) -> Expected:
    """Each section's cells, from the events and the summary rows, independently of the page."""
    started = {e.cell for e in events if isinstance(e, ev.CellStarted) and e.cell >= 0}
    compiled = {
        e.cell for e in events if isinstance(e, ev.CellStarted) and e.settings.get("compile_mode", "none") != "none"
    } | {e.cell for e in events if isinstance(e, COMPILE_EVENTS)}
    statuses = {r.cell: r.status for r in rows(events, live=False)}
    return Expected(
        started=started,
        compiled=compiled,
        profiled={e.cell for e in events if isinstance(e, ev.ProfileSummary)},
        outputs={e.cell for e in events if isinstance(e, ev.OutputSaved)},
        failed={c for c, s in statuses.items() if not st.is_ok(s)},
        statuses=statuses,
    )


def check_sections(p: Page, want: Expected) -> None:
    assert p.order == list(SECTION_IDS)
    for sid in EVERY_CELL:
        assert p.cells[sid] == want.started, sid
    for sid, cells in (
        ("compile", want.compiled),
        ("profile", want.profiled),
        ("outputs", want.outputs),
        ("failures", want.failed),
    ):
        assert p.cells[sid] == cells, sid
        if not cells:  # a section with nothing to show says why, in one line
            assert len(p.none_lines.get(sid, [])) == 1, (sid, p.none_lines.get(sid))
    assert not p.cells["environment"] and not p.cells["tables"]
    if not want.profiled:
        assert p.none_lines["profile"] == [PROFILE_HINT]
    for cell in want.failed:  # each failed cell says its status
        assert st.one_line(want.statuses[cell], 300) in p.section_text("failures")


_reports: dict[tuple[str, ...], tuple[str, float, Path]] = {}


def report_of(tmp_path_factory: pytest.TempPathFactory, name: str, *against: str, **kw: str) -> tuple[str, float]:
    """The page of a fixture session (built once per test process), and the seconds it took."""
    key = (name, *against, *(f"{k}={v}" for k, v in sorted(kw.items())))
    if key not in _reports:
        out = tmp_path_factory.mktemp("report") / f"{name}.html"
        start = time.perf_counter()
        write_report(FIXTURES / name, out, against=[FIXTURES / a for a in against], **kw)
        _reports[key] = (out.read_text(encoding="utf-8"), time.perf_counter() - start, out)
    text, took, _ = _reports[key]
    return text, took


# --- the fixture sessions ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", SESSIONS)
def test_every_section_of_a_fixture_session(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    text, took = report_of(tmp_path_factory, name)
    p = Page(text)
    check_sections(p, expected(read_events(FIXTURES / name / "events.jsonl")))
    assert_loads_nothing(p, text)
    assert len(text.encode()) < LIMIT_BYTES
    assert took < 20  # generous: a loaded 2-core CI box; about a second here
    # one it/s chart, and one latency chart per cell that timed a step
    assert "its" in p.figures
    assert p.figures.count("memory-peaks") == 1


def test_what_each_fixture_shows(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The words that matter in each session's page: the recompile's reason, the OOM and
    crash statuses, the unsupported lever, the profile's shares, the kept outputs' PSNR."""
    recompile = Page(report_of(tmp_path_factory, "recompile")[0])
    compile_text = recompile.section_text("compile")
    assert "size mismatch at index 0. expected 2, actual 1" in compile_text
    assert "graph break" in compile_text and "Tensor.item" in compile_text
    assert "compile" in recompile.figures

    oom = Page(report_of(tmp_path_factory, "oom")[0])
    assert "OOM after 2nd iteration" in oom.section_text("failures")
    assert "OOM during warmup" in oom.section_text("speed")  # a bar with no figure says why
    assert "OutOfMemoryError" in oom.section_text("failures")  # the error's last lines

    crashed = Page(report_of(tmp_path_factory, "crashed")[0])
    assert "crashed: signal 9 (SIGKILL)" in crashed.section_text("failures")
    assert "NVML Shared Library Not Found" in crashed.section_text("memory")  # host RSS instead, and why

    unsupported = Page(report_of(tmp_path_factory, "unsupported")[0])
    assert "not supported: xformers is not installed" in unsupported.section_text("failures")

    profiled = Page(report_of(tmp_path_factory, "profiled")[0])
    assert {"profile-families", "profile-mfu"} <= set(profiled.figures)
    assert "flash_fwd_kernel" in profiled.section_text("profile")

    levers = Page(report_of(tmp_path_factory, "levers")[0])
    outputs = levers.section_text("outputs")
    assert "PSNR 31.4 dB against cell 0" in outputs and "the baseline" in outputs
    assert "not found under the session" in outputs  # the fixture's outputs/ are not checked in

    lanes = Page(report_of(tmp_path_factory, "lanes")[0])
    assert "Ran on 2 lanes" in lanes.section_text("environment")
    clean_text = report_of(tmp_path_factory, "clean")[0]
    for cell, compiled in ((0, False), (1, True), (2, False), (3, True)):  # compile none, default, ...
        figure = clean_text[clean_text.index(f'id="chart-latency-cell-{cell}"') :]
        figure = figure[: figure.index("</figure>")]
        assert ("first call (log scale)" in figure) == compiled, cell  # a compile's step 0 on a log scale
    clean = Page(clean_text)
    env = clean.section_text("environment")
    assert "Settings common to every cell" in env and "NVIDIA H100 80GB HBM3" in env
    assert "batch size 1" in clean.section_text("tables")


def test_a_compared_pair_with_the_published_figures(tmp_path_factory: pytest.TempPathFactory) -> None:
    text, _ = report_of(tmp_path_factory, "clean", "clean-a100", reference="seed")
    p = Page(text)
    check_sections(p, expected(read_events(FIXTURES / "clean" / "events.jsonl")))
    assert_loads_nothing(p, text)
    assert {"its", "its-compared"} <= set(p.figures)
    tables = p.section_text("tables")
    assert "Side by side, and the published figures" in tables
    assert "RTX 4090" in tables and "B it/s" in tables  # compare's own columns
    assert "B = " in p.section_text("environment")
    assert "attention A sdpa, B classic" in p.section_text("speed")  # what the sessions differ in


def test_the_same_session_gives_the_same_page(tmp_path: Path) -> None:
    """Deterministic: no date, no random id, no dict order from a set."""
    first = write_report(FIXTURES / "recompile", tmp_path / "a.html").read_bytes()
    again = write_report(FIXTURES / "recompile", tmp_path / "a.html").read_bytes()
    assert first == again
    assert b"<dc:date>" not in first and b"Matplotlib v" not in first


def test_png_writes_each_chart(tmp_path: Path) -> None:
    out = write_report(FIXTURES / "clean", tmp_path / "r.html", png_dir=tmp_path / "png")
    p = Page(out.read_text(encoding="utf-8"))
    pngs = sorted(x.name for x in (tmp_path / "png").iterdir())
    assert pngs == sorted(f"{name}.png" for name in p.figures)
    assert {"its.png", "latency-cell-0.png", "memory-cell-3.png", "memory-peaks.png", "compile.png"} <= set(pngs)
    for name in pngs:
        assert (tmp_path / "png" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_default_output_is_in_the_session(tmp_path: Path) -> None:
    session = tmp_path / "s"
    session.mkdir()
    (session / "events.jsonl").write_bytes((FIXTURES / "unsupported" / "events.jsonl").read_bytes())
    assert write_report(session) == session / "report.html"
    assert (session / "report.html").is_file()


# --- the size limit: 24 cells with 1024² outputs ------------------------------------------------------


def noise_png(path: Path, size: int = 1024) -> None:
    """A PNG that does not compress (noise: several MB, as a real 1024² output can be)."""
    from PIL import Image

    data = random.Random(0).randbytes(size * size * 3)
    Image.frombytes("RGB", (size, size), data).save(path, format="PNG", compress_level=1)


def with_outputs(events: Iterable[ev.Event]) -> list[ev.Event]:
    """Each cell's kept output after its last measured call, and its Fidelity against cell 0."""
    events = list(events)
    last = {e.cell: e for e in events if isinstance(e, ev.CallFinished) and e.call_kind == "measured"}
    out: list[ev.Event] = []
    for e in events:
        out.append(e)
        if e is last.get(e.cell):
            folder = f"outputs/cell-{e.cell}"
            out.append(
                ev.OutputSaved(
                    ts=e.ts + 0.0002,
                    cell=e.cell,
                    call=e.call,
                    latents=f"{folder}/latents.safetensors",
                    images=[f"{folder}/image.png"],
                )
            )
            psnr = None if e.cell == 0 else 30.0 + e.cell / 4
            out.append(ev.Fidelity(ts=e.ts + 0.0004, cell=e.cell, baseline_cell=0, psnr_db=psnr, identical=e.cell == 0))
    return out


def test_a_24_cell_session_with_outputs_stays_under_3_mb(tmp_path: Path) -> None:
    m = MatrixSpec(
        pipelines=("sd-txt2img", "sd-img2img"),
        weights=("random",),
        dtypes=("fp16",),
        device="cuda",
        attention=("sdpa", "classic"),
        compile_modes=("none", "default"),
        batch_sizes=(1, 2, 4),
        steps=(30,),
        iterations=3,
        warmup=1,
        profile=True,
    )
    specs = expand(m, cuda_available=True)
    assert len(specs) == 24
    evs = session_events(specs, matrix=m, session_id="report-24", seed=11, overrides={5: {"outcome": "oom"}})
    evs = with_outputs(add_compiles(add_telemetry(add_profile(evs), gpu=True, seed=11)))
    session = tmp_path / "s24"
    session.mkdir()
    (session / "events.jsonl").write_text("".join(ev.encode(e) + "\n" for e in evs), encoding="utf-8")
    first = session / "outputs" / "cell-0"
    first.mkdir(parents=True)
    noise_png(first / "image.png")
    big = (first / "image.png").read_bytes()
    assert len(big) > 3_000_000  # one output alone is over the page's limit
    for cell in range(1, 24):
        folder = session / "outputs" / f"cell-{cell}"
        folder.mkdir(parents=True)
        (folder / "image.png").write_bytes(big)

    start = time.perf_counter()
    out = write_report(session)
    took = time.perf_counter() - start
    text = out.read_text(encoding="utf-8")
    size = len(text.encode())
    assert size < LIMIT_BYTES, f"{size} bytes"
    p = Page(text)
    check_sections(p, expected(evs))
    assert_loads_nothing(p, text)
    assert p.cells["outputs"] == set(range(24)) - {5}  # cell 5 ran out of memory before keeping one
    assert len(p.imgs) == 23 and all(src.startswith("data:image/jpeg;base64,") for src in p.imgs)
    assert took < 60, f"{took:.1f} s"
    print(f"24 cells: {size / 1e6:.2f} MB in {took:.1f} s")


# --- session text is data, never markup ----------------------------------------------------------------


def test_session_strings_are_escaped_and_drawn_safely(tmp_path: Path) -> None:
    evil = "<script>alert(1)</script> $x^{$ \x1b[2J <img src=http://example.com/x>"
    spec = CellSpec("sd-txt2img", device="cuda", weights="random", steps=10, iterations=2)
    evs = session_events(
        [spec, dataclasses.replace(spec, attention="classic")], overrides={1: {"outcome": "error", "message": evil}}
    )
    evs = [
        dataclasses.replace(e, data={**e.data, "hostname": evil}) if isinstance(e, ev.Environment) and e.cell < 0 else e
        for e in evs
    ]
    evs.insert(
        -1,
        ev.OutputSaved(ts=evs[-2].ts, cell=0, images=["../../../etc/passwd", "/etc/hostname", "outputs/x<y>.png"]),
    )
    session = tmp_path / "evil"
    session.mkdir()
    (session / "events.jsonl").write_text("".join(ev.encode(e) + "\n" for e in evs), encoding="utf-8")
    text = write_report(session, tmp_path / "evil.html").read_text(encoding="utf-8")
    p = Page(text)
    assert not [t for t, _ in p.tags if t == "script"]
    assert_loads_nothing(p, text)
    assert "\x1b" not in text and "\\x1b[2J" in text  # the escape written out, as every view does
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "not under the session directory" in p.section_text("outputs")  # nothing from outside embedded
    assert not p.imgs


# --- bad input: one line ------------------------------------------------------------------------------------


def test_a_corrupt_or_missing_session_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SessionError, match="does not exist"):
        write_report(tmp_path / "nope")
    broken = tmp_path / "broken"
    broken.mkdir()
    lines = (FIXTURES / "unsupported" / "events.jsonl").read_text().splitlines()
    lines.insert(5, "{not json")
    (broken / "events.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(SessionError, match="line 6 is corrupt") as err:
        write_report(broken)
    assert "\n" not in str(err.value)
    assert not (broken / "report.html").exists()


def test_without_matplotlib_the_error_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sdtop.profiler.report as report_package

    monkeypatch.setitem(sys.modules, "sdtop.profiler.report.charts", None)  # import fails
    monkeypatch.delattr(report_package, "charts", raising=False)  # even after an earlier import
    with pytest.raises(ReportError, match=r"pip install 'sdtop\[report\]'"):
        write_report(FIXTURES / "unsupported", tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


CLI_BAD = [
    (["report", "/no/such/session"], "/no/such/session does not exist"),
    (["report", str(FIXTURES / "clean"), "--against", "/no/such/session"], "/no/such/session does not exist"),
    (["report", str(FIXTURES / "clean"), "--reference", "bogus"], "unknown reference 'bogus'"),
    (["report", str(FIXTURES / "clean"), "-o", "/no/such/dir/r.html"], "no directory /no/such/dir"),
    (["report", str(FIXTURES / "clean"), "-o", "/"], "is a directory"),
    (["report", str(FIXTURES / "clean"), "--format", "pdf"], "unrecognized arguments: --format"),
]


@pytest.mark.parametrize(("argv", "message"), CLI_BAD, ids=[" ".join(a[2:]) or a[1] for a, _ in CLI_BAD])
def test_cli_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sdtop: error: ") and message in err, err


def test_cli_live_reaches_the_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sdtop report --live`` is write_report(live=True) (the page's live reading is tested above)."""
    calls: list[dict[str, object]] = []
    monkeypatch.setattr(page, "write_report", lambda *a, **kw: calls.append(kw) or tmp_path / "r.html")
    assert cli.main(["report", str(FIXTURES / "clean"), "--live"]) == 0
    assert cli.main(["report", str(FIXTURES / "clean")]) == 0
    assert [kw["live"] for kw in calls] == [True, False]


def test_cli_prints_the_path_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    png = tmp_path / "png"
    assert cli.main(["report", str(FIXTURES / "unsupported"), "-o", str(out), "--png", str(png)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.is_file() and (png / "its.png").is_file()
    assert "report" in cli.COMMANDS


def test_neither_help_nor_the_page_module_imports_matplotlib() -> None:
    """`sdtop --help` stays fast, and the dashboard may import the page module freely: matplotlib
    comes in only when a report is written."""
    code = "import sys; import sdtop.profiler.report.page; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
    helped = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sdtop.tui.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert helped.returncode == 0 and "sdtop report" in helped.stdout
    assert "matplotlib" not in helped.stderr


def test_speedups_are_the_dashboards(tmp_path: Path) -> None:
    """Against the first cell (in cell order) of the same pipeline, stage and batch with a
    figure; the page's bars and the dashboard's × column are the one rule's."""
    table = rows(read_events(FIXTURES / "lanes" / "events.jsonl"), live=False)
    ups = summary.speedups(table)
    by_batch: dict[int | None, list[float]] = {}
    for r in sorted(table, key=lambda r: r.cell):
        if r.it_per_s is not None:
            by_batch.setdefault(r.batch_size, []).append(r.it_per_s)
            assert ups[(r.cell, r.stage, r.height, r.width)] == pytest.approx(r.it_per_s / by_batch[r.batch_size][0])
    shown = SummaryModel()
    shown.set_rows(table)
    for t in shown.table():
        assert t.speedup == ups.get(summary.row_key(t.row))
    assert page.speedups is summary.speedups


def test_a_zero_figure_is_no_baseline_and_a_lone_row_is_not_fastest() -> None:
    base = rows(read_events(FIXTURES / "clean" / "events.jsonl"), live=False)[0]
    a, b, c = (dataclasses.replace(base, cell=i, it_per_s=v) for i, v in enumerate((0.0, 2.0, 3.0)))
    lone = dataclasses.replace(base, cell=3, pipeline="other", it_per_s=5.0)
    ups = summary.speedups([a, b, c, lone])
    assert summary.row_key(a) not in ups
    assert ups[summary.row_key(c)] == pytest.approx(1.5)
    assert summary.fastest([a, b, c, lone]) == {summary.row_key(c)}


def test_a_live_page_reads_its_running_cell_as_running(tmp_path: Path) -> None:
    """R mid-run: the log stops inside cell 3 with no session end. Live, that cell is running
    (not a failure, the page says it was written mid-run); read as a finished log it is
    interrupted, as ``sdtop report`` on a dead session says."""
    lines = (FIXTURES / "clean" / "events.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    last_start = max(i for i, line in enumerate(lines) if '"kind":"cell_started"' in line)
    session = tmp_path / "s"
    session.mkdir()
    (session / "events.jsonl").write_text("".join(lines[: last_start + 200]), encoding="utf-8")

    live = Page(write_report(session, tmp_path / "live.html", live=True).read_text(encoding="utf-8"))
    failures = live.section_text("failures")
    assert "1 cell(s) still running when the page was written (cells 3)" in failures
    assert "interrupted" not in failures and 3 not in live.cells["failures"]
    assert "while the session ran" in live.section_text("environment")
    assert "running" in live.section_text("speed")

    after = Page(write_report(session, tmp_path / "after.html").read_text(encoding="utf-8"))
    assert "interrupted" in after.section_text("failures") and 3 in after.cells["failures"]
    assert "still running" not in after.section_text("failures")
    assert "while the session ran" not in after.section_text("environment")


def test_the_environment_says_each_fact_once(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A real run's worker reports its own "started" beside the session's: the page says the
    start once (the session's), as it does every other fact."""
    real = Path(__file__).parent / "fixtures" / "recorded" / "tiny-cpu"
    pages = [write_report(real, tmp_path / "real.html").read_text(encoding="utf-8")]
    pages += [report_of(tmp_path_factory, name)[0] for name in ("clean", "lanes")]
    for text in pages:
        env = text[text.index('<section id="environment"') : text.index('<section id="tables"')]
        labels = re.findall(r"<tr><th>([^<]*)</th>", env)
        assert len(labels) == len(set(labels)), labels
        assert "started" in labels


def test_a_merged_session_compares_speed_within_each_device(tmp_path: Path) -> None:
    """``sdtop merge`` of an H100 and an A100 session: the A100's cells are speed-ups of the
    A100's first cell, not of the H100's; the speed chart groups bars by device too."""
    from sdtop.profiler.host.merge import merge

    merged = merge([FIXTURES / "clean", FIXTURES / "clean-a100"], tmp_path / "merged", force=False, argv=["sdtop"])
    table = rows(read_events(merged / "events.jsonl"), live=False)
    ups = summary.speedups(table)
    for device in {r.device_name for r in table}:
        first = min((r for r in table if r.device_name == device and r.pipeline == "sd-txt2img" and r.it_per_s),
                    key=lambda r: r.cell)  # fmt: skip
        assert ups[summary.row_key(first)] == pytest.approx(1.0), device
    speed = Page(write_report(merged, tmp_path / "m.html").read_text(encoding="utf-8")).section_text("speed")
    assert "NVIDIA A100-SXM4-80GB · sd-txt2img · batch 1" in speed and "on the same device" in speed
