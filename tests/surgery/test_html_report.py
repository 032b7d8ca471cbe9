"""``--html FILE``: one self-contained page, rendered by headless Chromium and read back from its DOM.

The page must show the per-pass table, an error histogram (inline SVG) per output, the dynamic dims
per pass and the graph diff, and must escape every model-provided string (a node named
``<script>alert(1)</script>`` stays text).
"""

from __future__ import annotations

import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from surgery.cli import main
from surgery.testing import make_model, vi

CHROMIUM = Path("/usr/bin/chromium")
EVIL_NODE = "<script>alert(1)</script>"
EVIL_OUTPUT = "y<img src=x onerror=alert(2)>"


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    """x[batch, 8] → MatMul → Dropout (named like a script) → Relu: three passes have work."""
    w = (np.random.default_rng(0).standard_normal((8, 4)) * 0.5).astype(np.float32)
    m = make_model(
        [
            h.make_node("MatMul", ["x", "w"], ["m"], name="/fc/MatMul"),
            h.make_node("Dropout", ["m"], ["d"], name=EVIL_NODE),
            h.make_node("Relu", ["d"], [EVIL_OUTPUT], name="/act/Relu"),
        ],
        [vi("x", T.FLOAT, ["batch", 8])],
        [vi(EVIL_OUTPUT, T.FLOAT, ["batch", 4])],
        {"w": w},
    )
    path = tmp_path / "net.onnx"
    onnx.save(m, path)
    return path


class _Tags(HTMLParser):
    """Every start tag of a document, with its attributes (to check what is an element and what text)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(text: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(text)
    return parser.tags


def _apply_html(model: Path, tmp_path: Path) -> Path:
    page = tmp_path / "report.html"
    assert (
        main(
            [
                "apply",
                "remove-dropout,make-static,cleanup",
                str(model),
                "-o",
                str(tmp_path / "out.onnx"),
                "--input-shape",
                "x:1,8",
                "--html",
                str(page),
            ]
        )
        == 0
    )
    return page


def test_the_page_is_self_contained_and_escapes_model_strings(model, tmp_path):
    text = _apply_html(model, tmp_path).read_text(encoding="utf-8")
    tags = _tags(text)
    assert not [t for t, _ in tags if t in ("script", "img", "link", "iframe", "object")]
    assert not [
        a for _, a in tags for k, v in a.items() if k in ("src", "href") or k.startswith("on")
    ]
    assert (
        "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text
    )
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and EVIL_NODE not in text
    assert "y&lt;img src=x onerror=alert(2)&gt;" in text


def test_prepare_writes_a_page_with_the_doctor_and_the_diff(model, tmp_path):
    page = tmp_path / "prep.html"
    assert (
        main(
            [
                "prepare",
                str(model),
                "-o",
                str(tmp_path / "p.onnx"),
                "--input-shape",
                "x:1,8",
                "--html",
                str(page),
                "--progress",
                "never",
            ]
        )
        == 0
    )
    text = page.read_text(encoding="utf-8")
    assert "<h2>doctor</h2>" in text and "ready for ATC" in text
    # prepare's gates run at the end here (fix-shapes with make-static): the histogram says so
    assert (
        text.count("class='pass-row'") >= 2
        and "<svg class='histogram'" in text
        and "end of the run" in text
    )
    # ATC removes Dropout itself (an info finding): prepare keeps it; shapes changed, no node went
    assert "nodes removed: <b>0</b>, added: <b>0</b>" in text
    assert re.search(r"<td class='l'>Dropout</td><td>1</td><td>1</td><td>0</td><td>0</td>", text)


def test_bucket_runs_get_one_section_each(model, tmp_path):
    page = tmp_path / "b.html"
    assert (
        main(
            [
                "apply",
                "remove-dropout,make-static,cleanup",
                str(model),
                "-o",
                str(tmp_path / "b.onnx"),
                "--buckets",
                "batch=1,2",
                "--html",
                str(page),
            ]
        )
        == 0
    )
    text = page.read_text(encoding="utf-8")
    assert "passes — bucket batch1" in text and "passes — bucket batch2" in text


def test_a_failed_run_still_writes_its_page(model, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "leaky.py").write_text(
        "from surgery.rules import Op, Rule, Var\n\n"
        "class R(Rule):\n    name = 'leaky'\n    pattern = Op('Relu', Var('x'))\n\n"
        "    def build(self, b, m):\n        return [b.op('LeakyRelu', m['x'], alpha=0.5)]\n\nRULES = [R]\n"
    )
    page = tmp_path / "fail.html"
    code = main(
        [
            "apply",
            "rewrite",
            str(model),
            "-o",
            str(tmp_path / "o.onnx"),
            "--set",
            "rewrite.rules=leaky:RULES",
            "--set",
            f'rewrite.path="{rules}"',
            "--input-shape",
            "x:2,8",
            "--html",
            str(page),
            "--allow-code",
        ]
    )
    assert code == 1 and not (tmp_path / "o.onnx").exists()
    text = page.read_text(encoding="utf-8")
    assert "FAILED" in text and "breaks tolerance" in text and "no result model" in text


def _chromium(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ]
    return subprocess.run(
        [str(CHROMIUM), *flags, *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        check=False,
    )


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is absent (Debian: apt-get install -y chromium)",
)
def test_chromium_renders_the_table_the_histograms_and_the_diff(model, tmp_path):
    page = _apply_html(model, tmp_path)
    proc = _chromium("--dump-dom", page.as_uri(), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    # the browser parsed a document: the rows, the histogram and the diff are elements of it
    tags = _tags(dom)
    rows = [a for t, a in tags if t == "tr" and a.get("class") == "pass-row"]
    assert len(rows) == 4  # fix-shapes (from --input-shape), remove-dropout, make-static, cleanup
    assert re.search(r'<td class="l">remove-dropout</td>', dom)
    histograms = [a for t, a in tags if t == "svg" and a.get("class") == "histogram"]
    assert (
        len(histograms) == 1
        and len([1 for t, a in tags if t == "rect" and a.get("class") == "bin"]) == 14
    )
    assert 'class="dims"' in dom
    assert re.search(r'<td class="l">Dropout</td><td>1</td><td>0</td><td>1</td><td>0</td>', dom)
    assert re.search(r"nodes removed: <b>1</b>", dom)
    # the script-named node is text, not an element: the browser ran nothing and made no script tag
    assert not [t for t, _ in tags if t in ("script", "img")]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    shot = tmp_path / "report.png"
    proc = _chromium(
        f"--screenshot={shot}", "--window-size=1200,1400", page.as_uri(), tmp_path=tmp_path
    )
    assert proc.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
