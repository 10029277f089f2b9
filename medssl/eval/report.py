"""One readable report from a folder of result files: ``report.md`` (+ ``report.html``) with every figure linked.

:func:`build_report` reads every ``*.json`` directly in a results folder (``benchmarks/results/`` or a protocol's
output folder) and writes one section per file, in name order:

* label-efficiency results (``"format": "medssl-label-efficiency"``, classification or ``"task": "segmentation"``):
  the :func:`~medssl.eval.label_efficiency.markdown_table` table, and the
  :func:`~medssl.eval.label_efficiency.label_efficiency_plot` figure regenerated into ``<out_dir>/figures/``;
* benchmark results (a JSON object with a ``.md`` sibling, or with a ``benchmark`` / ``machine`` key): the ``.md``
  sibling written by the same script (headings nested one level down, relative image links re-pointed at the
  report folder), else a table of the JSON's scalar fields; PNGs named after the file are linked too;
* results of the benchmark scripts with a format of their own (:data:`SCRIPT_FORMATS`: the label-efficiency
  harness, the pretraining-budget and headline summaries): their ``.md`` sibling, as for other benchmarks;
* anything else (invalid JSON, an unknown ``format``, a JSON without any of the above): listed under "Skipped
  files" with the reason, never dropped silently.

Image links are relative to the report, so the folder can be moved or opened in any markdown viewer.
``report.html`` uses the ``markdown`` package when it is installed, else a small built-in converter (headings,
tables, lists, code blocks, images).
"""
from __future__ import annotations

import html
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from medssl.eval.label_efficiency import label_efficiency_plot, markdown_table
from medssl.storage.atomic import atomic_write_text
from medssl.storage.hashing import PathLike

__all__ = ["build_report", "markdown_to_html"]

LABEL_EFFICIENCY = "medssl-label-efficiency"
#: results of benchmarks/*.py with a format of their own, shown through the .md the same script wrote beside them
SCRIPT_FORMATS = ("medssl-label-efficiency-benchmark", "medssl-pretraining-budget", "medssl-headline")
BENCHMARK_KEYS = ("benchmark", "machine")
MAX_SCALAR_ROWS = 60
ESCAPED_BAR = "\\|"
_IMAGE = re.compile(r"(!\[[^\]]*\]\()([^)\s]+)(\))")


class SkippedResult(Exception):
    """A results file the report cannot show; the message is the reason printed in the report."""


def build_report(results_dir: PathLike, out_dir: PathLike | None = None) -> Path:
    """Write ``report.md`` and ``report.html`` for every ``*.json`` in ``results_dir`` into ``out_dir`` (default
    ``<results_dir>/report``); figures go to ``<out_dir>/figures/``. Returns the path of ``report.md``."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results folder {results_dir} does not exist")
    out_dir = Path(out_dir) if out_dir is not None else results_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    sections, skipped = [], []
    files = sorted(results_dir.glob("*.json"))
    for path in files:
        try:
            sections.append(_section(path, out_dir))
        except SkippedResult as exc:
            skipped.append((path.name, str(exc)))
    lines = ["# medssl results report", "",
             f"{len(files)} result file(s) in `{results_dir.name}/`: {len(sections)} shown, {len(skipped)} skipped.",
             ""]
    lines += [f"- [{title}](#{_anchor(title)})" for title, _ in sections]
    if skipped:
        lines.append("- [Skipped files](#skipped-files)")
    for title, body in sections:
        lines += ["", f"## {title}", "", body.strip()]
    if skipped:
        lines += ["", "## Skipped files", "", "| file | reason |", "|---|---|"]
        lines += [f"| `{name}` | {_cell(reason)} |" for name, reason in skipped]
    text = "\n".join(lines) + "\n"
    report = atomic_write_text(out_dir / "report.md", text)
    page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>medssl results report</title><style>"
            "body{font-family:sans-serif;max-width:70em;margin:auto;padding:1em}table{border-collapse:collapse}"
            "td,th{border:1px solid #aaa;padding:2px 6px}img{max-width:100%}</style></head><body>\n"
            + markdown_to_html(text) + "\n</body></html>\n")
    atomic_write_text(out_dir / "report.html", page)
    return report


def _section(path: Path, out_dir: Path) -> tuple[str, str]:
    """``(title, markdown body)`` of one result file; raises :class:`SkippedResult` with the reason."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SkippedResult(f"not readable as JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise SkippedResult(f"a JSON {type(data).__name__}, not a result object")
    fmt = data.get("format")
    if fmt == LABEL_EFFICIENCY:
        return _label_efficiency(path, data, out_dir)
    sibling = path.with_suffix(".md")
    if fmt in SCRIPT_FORMATS and sibling.is_file():  # benchmark scripts' own results: their .md is the report
        return _benchmark(path, data, sibling, out_dir)
    if fmt is not None:
        raise SkippedResult(f"unknown result format {fmt!r}")
    if sibling.is_file() or any(k in data for k in BENCHMARK_KEYS):
        return _benchmark(path, data, sibling if sibling.is_file() else None, out_dir)
    raise SkippedResult("unrecognised JSON: no 'format' field, no .md sibling and no "
                        f"{' / '.join(BENCHMARK_KEYS)} key (keys: {', '.join(sorted(data)[:8])})")


def _label_efficiency(path: Path, result: dict[str, Any], out_dir: Path) -> tuple[str, str]:
    if result.get("format_version", 1) != 1:
        raise SkippedResult(f"{LABEL_EFFICIENCY} format_version {result.get('format_version')} is not supported")
    records = result.get("records")
    if not isinstance(records, list) or not records:
        raise SkippedResult("label-efficiency result without records")
    segmentation = result.get("task") == "segmentation"
    seen = list(dict.fromkeys(r.get("metric") for r in records))
    if segmentation:  # the order of the protocol's own table: mean Dice, Dice per label, HD95
        per_label = [f"dice_{n}" for n in result.get("label_names", [])[1:] if f"dice_{n}" in seen]
        metrics = [m for m in ("dice", *per_label, "hd95") if m in seen] + \
                  [m for m in seen if m not in ("dice", "hd95", *per_label) and not str(m).startswith("dice_")]
    else:
        metrics = seen
    methods = (result.get("config") or {}).get("methods") or list(dict.fromkeys(r.get("method") for r in records))
    try:
        table = markdown_table(result, metrics, methods, unit="cases" if segmentation else "items")
    except (KeyError, TypeError, ValueError) as exc:
        raise SkippedResult(f"malformed label-efficiency result ({type(exc).__name__}: {exc})") from exc
    title, body = _split_title(table, f"Label efficiency: {result.get('dataset', path.stem)}")
    lines = [f"Source: `{path.name}` ({'segmentation' if segmentation else 'classification'}).", ""]
    if not result.get("complete", True):
        lines += ["**Incomplete run**: the protocol stopped early; the table holds the records written so far.", ""]
    lines.append(body)
    metric = next((m for m in ("dice" if segmentation else "auroc",) if m in seen), metrics[0])
    x = "count" if segmentation or all(r.get("fraction") is None for r in records) else "fraction"
    figure = out_dir / "figures" / f"{path.stem}.png"
    try:
        label_efficiency_plot(result, figure, metric, methods, x=x)
        lines += ["", f"![label efficiency: {metric}]({_rel(figure, out_dir)})"]
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        lines += ["", f"_Figure not drawn: {exc}_"]
    return title, "\n".join(lines)


def _benchmark(path: Path, data: dict[str, Any], sibling: Path | None, out_dir: Path) -> tuple[str, str]:
    name = str(data.get("benchmark") or data.get("name") or path.stem)
    if sibling is not None:
        try:
            text = sibling.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SkippedResult(f"its table {sibling.name} is unreadable ({exc})") from exc
        text = _IMAGE.sub(lambda m: m[1] + _relink(m[2], path.parent, out_dir) + m[3], text)
        title, body = _split_title(text, name)
        lines = [f"Source: `{path.name}` (table from `{sibling.name}`).", "", body]
    else:
        title, lines = name, [f"Source: `{path.name}` (no `.md` written with it: its scalar fields).", "",
                              _scalar_table(data)]
    linked = set(_IMAGE.findall("\n".join(lines)))
    for png in sorted(path.parent.glob(f"{path.stem}*.png")):
        link = _rel(png, out_dir)
        if not any(link == m[1] for m in linked):
            lines += ["", f"![{png.stem}]({link})"]
    return title, "\n".join(lines)


def _scalar_table(data: dict[str, Any]) -> str:
    rows: list[tuple[str, Any]] = []
    lists: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, v in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), v)
        elif isinstance(value, list):
            lists.append(f"`{prefix}` ({len(value)} items)")
        else:
            rows.append((prefix, value))

    walk("", data)
    lines = ["| field | value |", "|---|---|"]
    for key, value in rows[:MAX_SCALAR_ROWS]:
        shown = f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else value
        lines.append(f"| `{key}` | {_cell(str(shown))} |")
    if len(rows) > MAX_SCALAR_ROWS:
        lines.append(f"| … | {len(rows) - MAX_SCALAR_ROWS} more fields |")
    if lists:
        lines += ["", "Lists not shown: " + ", ".join(lists) + "."]
    return "\n".join(lines)


def _split_title(markdown: str, default: str) -> tuple[str, str]:
    """The first ``# `` heading as the section title, the rest with headings nested one level deeper."""
    lines = markdown.strip().splitlines()
    title = default
    if lines and lines[0].startswith("# "):
        title, lines = lines[0][2:].strip(), lines[1:]
    fenced = False
    for i, line in enumerate(lines):
        fenced ^= line.startswith("```")
        if not fenced and re.match(r"#{1,5} ", line):
            lines[i] = "#" + line
    return title, "\n".join(lines).strip()


def _relink(src: str, base: Path, out_dir: Path) -> str:
    if re.match(r"^[a-z][a-z0-9+.-]*:", src, re.IGNORECASE) or src.startswith(("/", "#")):
        return src
    return _rel(base / src, out_dir)


def _rel(target: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(Path(target).resolve(), Path(out_dir).resolve())).as_posix()


def _anchor(title: str) -> str:
    """GitHub-style heading anchor (lower case, punctuation dropped, spaces -> hyphens)."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_to_html(text: str) -> str:
    """HTML body of ``text``: the ``markdown`` package (tables, fenced code) when installed, else the built-in
    converter of the subset the report uses."""
    try:
        import markdown
    except ImportError:
        return _simple_html(text)
    return markdown.markdown(text, extensions=["tables", "fenced_code", "toc"],
                             extension_configs={"toc": {"slugify": lambda value, _separator: _anchor(value)}})


def _inline(text: str) -> str:
    out = html.escape(text, quote=True)
    out = re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", r'<img alt="\1" src="\2">', out)
    out = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', out)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"(?<![\w*])_([^_]+)_(?!\w)", r"<em>\1</em>", out)


def _simple_html(text: str) -> str:
    out: list[str] = []
    lines, i = text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = next((k for k in range(i + 1, len(lines)) if lines[k].startswith("```")), len(lines))
            out.append("<pre><code>" + html.escape("\n".join(lines[i + 1:j])) + "</code></pre>")
            i = j + 1
            continue
        block = [line]
        prefix = "|" if line.startswith("|") else "- " if line.startswith("- ") else None
        while prefix and i + 1 < len(lines) and lines[i + 1].startswith(prefix):
            i += 1
            block.append(lines[i])
        i += 1
        if heading := re.match(r"(#{1,6}) (.*)", line):
            level, title = len(heading[1]), heading[2]
            out.append(f'<h{level} id="{_anchor(title)}">{_inline(title)}</h{level}>')
        elif prefix == "|":
            cells = [[c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]] for row in block]
            body = [r for r in cells if not all(re.fullmatch(r":?-+:?", c) for c in r)]
            rows = []
            for n, row in enumerate(body):
                tag = "th" if n == 0 else "td"
                rows.append("<tr>" + "".join(f"<{tag}>{_inline(c.replace(ESCAPED_BAR, '|'))}</{tag}>" for c in row)
                            + "</tr>")
            out.append("<table>\n" + "\n".join(rows) + "\n</table>")
        elif prefix == "- ":
            out.append("<ul>" + "".join(f"<li>{_inline(b[2:])}</li>" for b in block) + "</ul>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    return "\n".join(out)
