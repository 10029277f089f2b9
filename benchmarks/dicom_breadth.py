"""DICOM breadth the way users meet it: every shared dcm_qa folder and pydicom's bundled test files, converted whole
by ``medssl convert FOLDER OUT_DIR/`` and by the PyPI dcm2niix, compared volume by volume.

For each input (a dcm_qa ``In/`` folder, gunzipped where stored as ``.dcm.gz``; each pydicom test file on its own)
both tools convert everything they find. Every volume dcm2niix writes is a reference row: **agree** when medssl wrote
a volume with the same voxels (after scl_slope/scl_inter, both in closest canonical orientation) and an affine
within 0.02 mm; **voxels differ** / **affine differs** when medssl wrote one of that shape that is not the same;
otherwise medssl's reasons (the reason codes of the stacks it refused, or ``not found``). Volumes medssl wrote that
match no dcm2niix volume are rows of their own (**medssl only**); inputs neither tool converts are **both refuse**,
with medssl's reasons. Rows are grouped by vendor (Manufacturer) and object type (classic, mosaic, enhanced,
legacy multi-frame) in the printed table.

    python benchmarks/dicom_breadth.py                 # every dcm_qa folder + pydicom's files (about a minute)
    python benchmarks/dicom_breadth.py --quick --out /tmp/res   # dcm_qa_12bit + 3 pydicom files (the smoke test)

Writes ``benchmarks/results/dicom_breadth.json`` (every row, tool versions, machine) and ``.md`` (the tables).
Needs ``dcm2niix`` on PATH (``pip install dcm2niix``) and highdicom (enhanced objects made from classic series).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import code_line, code_state, machine, write_results  # noqa: E402 - shared by every benchmark

REPO = Path(__file__).resolve().parents[1]
AFFINE_TOL_MM = 0.02
QUICK_PYDICOM = ("CT_small.dcm", "MR_small.dcm", "emri_small.dcm")


#: Classic series made into one Legacy Converted Enhanced object each with highdicom (enhanced inputs beyond the
#: Philips set; the Siemens mosaics are left out: a mosaic frame is no slice).
HIGHDICOM_SERIES = ("dcm_qa_nih/In/20180918GE/mr_0004", "dcm_qa_nih/In/20180918GE/mr_0007", "dcm_qa_ct/In/GE")


def _inputs(shared: Path, quick: bool) -> list[tuple[str, Path]]:
    """(label, folder or file) to convert: each dcm_qa ``In/`` folder, classic dcm_qa series made enhanced with
    highdicom (label ``highdicom/...``), then each pydicom test file."""
    import pydicom

    out = []
    folders = ["dcm_qa_12bit"] if quick else sorted(p.name for p in (shared / "dicom").glob("dcm_qa_*"))
    out += [(name, shared / "dicom" / name / "In") for name in folders if (shared / "dicom" / name / "In").is_dir()]
    if not quick:
        out += [(f"highdicom/{rel}", shared / "dicom" / rel) for rel in HIGHDICOM_SERIES
                if (shared / "dicom" / rel).is_dir()]
    bundled = Path(pydicom.__file__).parent / "data" / "test_files"
    files = [bundled / n for n in QUICK_PYDICOM] if quick else sorted(
        p for p in bundled.rglob("*") if p.is_file() and p.suffix.lower() in (".dcm", ""))
    out += [(f"pydicom/{p.relative_to(bundled)}", p) for p in files if p.is_file()]
    return out


def _legacy_enhanced(src: Path, dest: Path) -> Path:
    """The classic series in ``src`` as one Legacy Converted Enhanced MR/CT file in ``dest`` (highdicom)."""
    import highdicom as hd
    import pydicom
    from pydicom.uid import generate_uid

    datasets = [pydicom.dcmread(f) for f in sorted(src.rglob("*.dcm"))]
    kind = {"MR": hd.legacy.LegacyConvertedEnhancedMRImage, "CT": hd.legacy.LegacyConvertedEnhancedCTImage}
    enhanced = kind[datasets[0].Modality](datasets, series_instance_uid=generate_uid(), series_number=int(
        datasets[0].SeriesNumber), sop_instance_uid=generate_uid(), instance_number=1)
    dest.mkdir(parents=True)
    enhanced.save_as(dest / "enhanced.dcm")
    return dest


def _stage(src: Path, dest: Path, label: str = "") -> Path:
    """A private copy of an input (``.gz`` members gunzipped: neither tool reads gzipped DICOM); ``highdicom/``
    inputs are made into one enhanced file."""
    if label.startswith("highdicom/"):
        return _legacy_enhanced(src, dest)
    if src.is_file():
        dest.mkdir(parents=True)
        shutil.copy(src, dest / src.name)
        return dest
    for f in sorted(src.rglob("*")):
        if f.is_file():
            target = dest / f.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            if f.suffix == ".gz":
                target.with_suffix("").write_bytes(gzip.decompress(f.read_bytes()))
            else:
                shutil.copy(f, target)
    return dest


def _canonical(path: Path):
    """(squeezed values, affine) in closest canonical orientation; values None for an RGB image (which medssl
    refuses by design: colour is no training volume)."""
    img = nib.as_closest_canonical(nib.load(path))
    if img.get_data_dtype().names:  # RGB24: a structured dtype
        return None, img.affine
    return np.squeeze(img.get_fdata()), img.affine


def _dcm2niix(folder: Path, out: Path) -> list[tuple[Path, dict]]:
    """dcm2niix's volumes of ``folder`` with their JSON sidecars; named by series number only (``-f %s``: the
    protocol name, dcm2niix's default, is header text and stays out of the results)."""
    out.mkdir(parents=True)
    subprocess.run(["dcm2niix", "-b", "y", "-z", "y", "-f", "%s", "-o", str(out), str(folder)],
                   capture_output=True, text=True, timeout=600, check=False)
    written = []
    for nii in sorted(out.glob("*.nii.gz")):
        sidecar = nii.with_name(nii.name[:-7] + ".json")
        meta = json.loads(sidecar.read_text()) if sidecar.exists() else {}
        written.append((nii, meta))
    return written


_VENDORS = {"SIEMENS": "Siemens", "GE": "GE", "PHILIPS": "Philips", "TOSHIBA": "Canon/Toshiba",
            "CANON": "Canon/Toshiba", "UIH": "UIH", "UNITED": "UIH"}


def _vendor(manufacturer: str) -> str:
    """One spelling per vendor ("SIEMENS" and "Siemens Healthineers" alike); "?" when the header names none."""
    words = str(manufacturer or "").upper().split()
    return _VENDORS.get(words[0], manufacturer) if words else "?"


def _object_type(headers) -> str:
    h = headers[0]
    if h.enhanced_frames:
        return "enhanced"
    if h.is_mosaic:
        return "mosaic"
    return "legacy multi-frame" if h.number_of_frames > 1 else "classic"


def _medssl(folder: Path, out: Path):
    """medssl's outcome per stack: (status, reason, written path or None, vendor, object type), and the reasons of
    files skipped before grouping."""
    from medssl.data.convert import convert_folder
    from medssl.data.dicom import list_files, scan_headers
    from medssl.data.series import group_headers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = convert_folder(folder, out)
        headers, _ = scan_headers(list_files(folder))
    stacks = group_headers(headers)  # the order convert_folder reports them in
    assert len(stacks) == len(result.stacks)
    rows = [(o.status, o.reason, o.written[0] if o.written else None, _vendor(s.first.manufacturer), _object_type(
        s.headers)) for o, s in zip(result.stacks, stacks)]
    return rows, result.skipped_files


def compare_input(label: str, src: Path, work: Path) -> list[dict]:
    """Every reference row (dcm2niix volume), medssl-only row and both-refuse row of one input."""
    staged = _stage(src, work / "in", label)
    notes: dict[str, str] = {}
    if label.startswith("highdicom/"):
        # the truth for an object made from a classic series is that series: dcm2niix's conversion of the classic
        # files is the reference; whether dcm2niix reads the enhanced object the same way goes into the note
        refs = _dcm2niix(_stage(src, work / "classic"), work / "dcm2niix")
        own = [_canonical(p) for p, _ in _dcm2niix(staged, work / "dcm2niix_enhanced")]
        for nii, _ in refs:
            data, affine = _canonical(nii)
            agrees = any(d is not None and d.shape == data.shape and np.array_equal(d, data)
                         and np.allclose(a, affine, atol=AFFINE_TOL_MM) for d, a in own)
            notes[nii.name] = f"dcm2niix on the enhanced object {'agrees' if agrees else 'differs'}"
    else:
        refs = _dcm2niix(staged, work / "dcm2niix")
    ours, skipped = _medssl(staged, work / "medssl")
    loaded = {i: _canonical(p) for i, (status, _, p, _, _) in enumerate(ours) if p is not None}
    used: set[int] = set()
    refused = Counter(reason for status, reason, *_ in ours if status != "written") + Counter(skipped)
    default_type = Counter(t for *_, t in ours).most_common(1)[0][0] if ours else "not an image"
    rows = []
    for nii, meta in refs:
        ref_data, ref_affine = _canonical(nii)
        vendor = _vendor(meta.get("Manufacturer", ""))
        verdict, kind = "not found", default_type
        if ref_data is None:
            kind = "colour"
        for i, (data, affine) in loaded.items() if ref_data is not None else ():
            if data.shape != ref_data.shape:
                continue
            same_voxels = np.array_equal(data, ref_data)
            same_affine = np.allclose(affine, ref_affine, atol=AFFINE_TOL_MM)
            candidate = "agree" if same_voxels and same_affine else (
                "affine differs" if same_voxels else "voxels differ")
            if candidate == "agree" or verdict == "not found":
                verdict, kind = candidate, ours[i][4]
                vendor = vendor if vendor != "?" else ours[i][3]
                if candidate == "agree":
                    used.add(i)
                    break
        if verdict == "not found" and refused:
            verdict = "medssl: " + ", ".join(f"{k} x{v}" if v > 1 else k for k, v in sorted(refused.items()))
        rows.append({"input": label, "reference": nii.name, "vendor": vendor, "type": kind, "verdict": verdict,
                     "note": notes.get(nii.name, "")})
    for i, (status, _, path, vendor, kind) in enumerate(ours):
        if path is not None and i not in used:
            rows.append({"input": label, "reference": "", "vendor": vendor, "type": kind, "verdict": "medssl only",
                         "note": ""})
    if not refs and not loaded:
        why = ", ".join(sorted(refused)) or "nothing found"
        rows.append({"input": label, "reference": "", "vendor": "?", "type": default_type,
                     "verdict": f"both refuse (medssl: {why})", "note": ""})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per (vendor, type): dcm2niix volumes, how many medssl reproduces, differs on, refuses; medssl-only volumes."""
    groups: dict[tuple[str, str], Counter] = {}
    for r in rows:
        c = groups.setdefault((r["vendor"], r["type"]), Counter())
        v = r["verdict"]
        c["references"] += bool(r["reference"])
        c["agree"] += v == "agree"
        c["differ"] += v in ("voxels differ", "affine differs")
        c["medssl refuses"] += bool(r["reference"]) and (v.startswith("medssl:") or v == "not found")
        c["medssl only"] += v == "medssl only"
        c["both refuse"] += v.startswith("both refuse")
    return [{"vendor": k[0], "type": k[1], **dict(c)} for k, c in sorted(groups.items())]


def markdown(report: dict) -> str:
    cols = ("references", "agree", "differ", "medssl refuses", "medssl only", "both refuse")
    lines = ["# DICOM breadth: medssl convert vs dcm2niix", "",
             f"dcm2niix {report['dcm2niix']}; agreement = voxels exact and affine within {AFFINE_TOL_MM} mm "
             "(closest canonical orientation). "
             f"{report['totals']['agree']} of {report['totals']['references']} dcm2niix volumes reproduced.", "",
             "| vendor | type | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
    lines += [f"| {s['vendor']} | {s['type']} | " + " | ".join(str(s.get(c, 0)) for c in cols) + " |"
              for s in report["summary"]]
    lines += ["", "Inputs `highdicom/...` are classic series made into one Legacy Converted Enhanced object: the "
              "reference is dcm2niix's conversion of the classic files; the note says whether dcm2niix reads the "
              "enhanced object the same way.", "", "## Every row", "",
              "| input | dcm2niix volume | vendor | type | verdict | note |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['input']} | {r['reference']} | {r['vendor']} | {r['type']} | {r['verdict']} | {r['note']} |"
              for r in report["rows"]]
    lines += ["", code_line(report), "", "Regenerate: `python benchmarks/dicom_breadth.py`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="dcm_qa_12bit and three pydicom files only")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--shared-data", type=Path,
                        default=Path(os.environ.get("MEDSSL_SHARED_DATA", REPO.parent / "shared" / "data")))
    args = parser.parse_args(argv)
    if shutil.which("dcm2niix") is None:
        print("dcm2niix is not on PATH (pip install dcm2niix)", file=sys.stderr)
        return 2
    version = subprocess.run(["dcm2niix", "-v"], capture_output=True, text=True, check=False).stdout.strip()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="medssl-breadth-") as tmp:
        for n, (label, src) in enumerate(_inputs(args.shared_data.resolve(), args.quick)):
            rows += compare_input(label, src, Path(tmp) / f"{n:04d}")
    summary = summarise(rows)
    totals = {k: sum(s.get(k, 0) for s in summary) for k in ("references", "agree")}
    report = {"dcm2niix": version.splitlines()[-1] if version else "?", "summary": summary, "totals": totals,
              "rows": rows, "quick": args.quick, "machine": machine(), "code": code_state()}
    text = write_results(args.out, "dicom_breadth" + ("_quick" if args.quick else ""), report, markdown)
    print(text.split("## Every row")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
