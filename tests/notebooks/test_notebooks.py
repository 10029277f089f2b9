"""Every notebook in notebooks/ runs top to bottom (nbclient, small-config switch), and is committed without
outputs. Notebooks on real data are marked ``realdata``: they skip without ../shared/data and fail under
MEDSSL_REQUIRE_REALDATA=1."""
from __future__ import annotations

import pytest

from tests.conftest import REPO, require_shared

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = REPO / "notebooks"
#: notebook -> the shared-data files it needs (empty: runs on data the package generates)
NOTEBOOKS = {
    "01_quickstart": (),
    "02_dicom_archive_qc": (),
    "03_label_efficiency_medmnist": (("medmnist", "pneumoniamnist.npz"),),
    "04_hippocampus_segmentation": (("hippocampus", "imagesTr"), ("hippocampus", "labelsTr")),
    "05_representations": (("medmnist", "pneumoniamnist.npz"),),
    "06_tumour_segmentation": (("brats", "dataset.json"), ("brats", "imagesTr")),
}


def test_the_notebook_list_is_complete():
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_committed_without_outputs(name):
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: strip outputs before committing"


def _params():
    for name, needs in sorted(NOTEBOOKS.items()):
        yield pytest.param(name, needs, id=name, marks=[pytest.mark.realdata] if needs else [])


@pytest.mark.parametrize("name, needs", list(_params()))
def test_notebook_runs_top_to_bottom(name, needs, tmp_path, monkeypatch):
    for parts in needs:
        require_shared(*parts)
    monkeypatch.setenv("MEDSSL_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MEDSSL_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    pictures = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert pictures, f"{name} displayed no figure"
    written = list((tmp_path / name).rglob("*.png"))
    assert written, f"{name} wrote no PNG under its output folder"
