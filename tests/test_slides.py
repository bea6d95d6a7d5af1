"""Each lesson notebook is also a slideshow: jupyter nbconvert --to slides (reveal.js, part of
jupyter) builds it from the cells' slide metadata, with the figures."""
import glob
import os

import nbformat
import pytest
from nbconvert import SlidesExporter

from conftest import ROOT

NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_the_notebook_becomes_slides_with_its_figures(path):
    notebook = nbformat.read(path, as_version=4)
    kinds = [cell.metadata.get("slideshow", {}).get("slide_type") for cell in notebook.cells]
    assert None not in kinds, "a cell has no slide metadata"
    html, _ = SlidesExporter().from_notebook_node(notebook)
    slides = kinds.count("slide") + kinds.count("subslide")
    assert html.count("<section") >= slides > 3
    figures = sum("image/png" in output.get("data", {}) for cell in notebook.cells
                  for output in cell.get("outputs", []) if cell.metadata["slideshow"]["slide_type"] != "skip")
    assert html.count("data:image/png") >= figures
    assert notebook.cells[0].metadata["slideshow"]["slide_type"] == "slide"  # the title opens the show


def test_the_readme_says_the_command():
    assert "jupyter nbconvert --to slides" in open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
