"""build_report: every JSON in a results folder becomes a section (or a reasoned skip) with working image links."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from medssl.eval.report import build_report, markdown_to_html


def _records(methods, budgets, metrics):
    recs = []
    for i, method in enumerate(methods):
        for fraction, count, n in budgets:
            for seed in (0, 1):
                for m, metric in enumerate(metrics):
                    recs.append({"method": method, "fraction": fraction, "count": count, "n_labelled": n,
                                 "seed": seed, "metric": metric, "value": 0.5 + 0.1 * i + 0.01 * seed + 0.02 * m,
                                 "split": "test"})
    return recs


def _classification():
    return {"format": "medssl-label-efficiency", "format_version": 1, "dataset": "toymnist", "complete": True,
            "data": {"path": "toy.npz", "num_classes": 2, "n_train": 100, "n_val": 20, "n_test": 30},
            "encoder": None, "config": {"methods": ["linear_probe", "scratch"]},
            "records": _records(["linear_probe", "scratch"], [(0.1, None, 10), (0.5, None, 50)],
                                ["auroc", "accuracy", "balanced_accuracy"])}


def _segmentation():
    return {"format": "medssl-label-efficiency", "format_version": 1, "task": "segmentation", "dataset": "toyseg",
            "split": "test", "complete": False, "label_names": ["background", "organ"],
            "data": {"path": "toyseg/", "n_train": 8, "n_val": 2, "n_test": 2}, "encoder": None,
            "runs": [{"labelled_cases": ["case_0", "case_1"]}],
            "records": _records(["finetune", "scratch"], [(None, 2, 2), (None, 4, 4)], ["dice", "hd95", "dice_organ"])}


@pytest.fixture
def results(tmp_path) -> Path:
    res = tmp_path / "results"
    res.mkdir()
    (res / "label_efficiency_toymnist.json").write_text(json.dumps(_classification()))
    (res / "label_efficiency_toyseg.json").write_text(json.dumps(_segmentation()))
    (res / "mystery.json").write_text(json.dumps({"hello": [1, 2]}))
    (res / "bench.json").write_text(json.dumps({"benchmark": "bench", "machine": {"cores": 2}}))
    (res / "bench.md").write_text("# Bench title\n\n## Numbers\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![curve](bench_curve.png)\n")
    mpimg.imsave(res / "bench_curve.png", np.random.default_rng(0).random((8, 8)))
    return res


def _image_links(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", markdown)


@pytest.mark.parametrize("elsewhere", [False, True], ids=["default_out", "other_out"])
def test_report_has_every_file_and_working_images(results, tmp_path, elsewhere):
    out_dir = tmp_path / "elsewhere" / "rep" if elsewhere else None
    report = build_report(results, out_dir)
    assert report == (out_dir or results / "report") / "report.md"
    text = report.read_text()
    for name in ("label_efficiency_toymnist.json", "label_efficiency_toyseg.json", "mystery.json", "bench.json"):
        assert f"`{name}`" in text
    assert "## Label efficiency: toymnist" in text and "## Label efficiency: toyseg" in text
    assert "| linear_probe | 10% | 10 | 2 | 0.505 ± 0.007 | 0.525 ± 0.007 | 0.545 ± 0.007 |" in text
    assert "mean Dice" in text and "Incomplete run" in text and "case_0" not in text
    assert "## Bench title" in text and "### Numbers" in text  # sibling .md, headings nested
    skipped = text.split("## Skipped files")[1]
    assert "`mystery.json`" in skipped and "unrecognised" in skipped
    links = _image_links(text)
    assert len(links) == 3  # two regenerated label-efficiency figures + the benchmark's own PNG
    for link in links:
        assert not Path(link).is_absolute() and (report.parent / link).is_file(), link
    for link in [k for k in links if k.startswith("figures/")]:
        pixels = mpimg.imread(report.parent / link)
        assert pixels.shape[0] > 100 and pixels.std() > 0.05
    page = (report.parent / "report.html").read_text()
    assert page.count("<img") == 3 and "<table>" in page and "mystery.json" in page


def test_html_fallback_without_markdown_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "markdown", None)  # import markdown -> ImportError
    page = markdown_to_html("# Title <x>\n\n- [a](#a)\n\n| h1 | h2 |\n|---|---:|\n| `1` | a \\| b |\n\n"
                            "![fig](figures/f.png)\n\n```\n<raw>\n```\n")
    assert '<h1 id="title-x">Title &lt;x&gt;</h1>' in page
    assert "<tr><th>h1</th><th>h2</th></tr>" in page and "<td><code>1</code></td><td>a | b</td>" in page
    assert '<img alt="fig" src="figures/f.png">' in page and "&lt;raw&gt;" in page
    assert '<li><a href="#a">a</a></li>' in page


def test_report_on_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_report(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    text = build_report(tmp_path / "empty").read_text()
    assert "0 result file(s)" in text


def test_cli_evaluate_report_on_the_repo_results(tmp_path):
    """`medssl evaluate report` on the committed benchmark results writes a report whose image links exist."""
    import re

    from medssl.cli import main

    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    assert main(["evaluate", "report", str(results), "--out", str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    for name in sorted(p.name for p in results.glob("*.json")):
        assert name in md
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (tmp_path / link).is_file(), link
    # the harness's own results are shown through their .md (the paired table included), not skipped
    skipped = md.split("## Skipped files")[1] if "## Skipped files" in md else ""
    assert "label_efficiency_adrenalmnist3d.json" not in skipped and "Paired gain over scratch" in md
    assert main(["evaluate", "report", str(tmp_path / "missing")]) == 2
    assert main(["evaluate"]) == 2
