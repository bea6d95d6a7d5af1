"""Every notebook runs from top to bottom with the shipped checkpoint, as a reader would run it:
kernel python3, the notebooks/ folder as working directory, figures written to a temporary folder."""
import glob
import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import SHAKESPEARE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))
CELL_TIMEOUT = 120  # seconds; a whole notebook takes well under a minute on a 2-core CPU
# a shell command in a cell (!python ../sample.py ...) does not raise when it fails: read its output
FAILED_COMMAND = re.compile(r"^(Traceback \(most recent call last\)|error: )", re.MULTILINE)


def test_one_notebook_per_idea():
    assert len(NOTEBOOKS) >= 8, f"expected at least 8 notebooks in {NOTEBOOK_DIR}, found {len(NOTEBOOKS)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("NANODECODE_FIGURES", str(tmp_path))  # leave docs/figures alone
    monkeypatch.setenv("NANODECODE_INPUT", SHAKESPEARE)  # the text, for the study notebook
    # One thread: the model is small and decodes one character at a time, and a second thread
    # fighting other processes for a 2-core machine can slow a notebook down a hundredfold.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, kernel_name="python3", timeout=CELL_TIMEOUT,
                   resources={"metadata": {"path": NOTEBOOK_DIR}}).execute()  # raises on an error
    assert os.listdir(tmp_path), "the notebook saved no figure to $NANODECODE_FIGURES"
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                assert not FAILED_COMMAND.search(output.text), f"a command failed in:\n{cell.source}\n{output.text}"
