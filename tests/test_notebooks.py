"""Every notebook runs from top to bottom with the shipped checkpoint, as a reader would run it, and
shows what its committed copy shows: a code change that changes a notebook's text output fails
here until the notebook is executed again and committed (python plots.py, or Jupyter's
"Restart and run all").

What may legitimately differ between two runs is masked before comparing, and nothing else:
  - durations and speeds ("12.3 s", "581 characters/s", "1.7x faster", "0.42 ms"): they depend on
    the machine and its load;
  - how a shell command's output was split into chunks, and its line endings (a terminal writes
    \\r\\n): the text is compared whole, per cell;
  - the ids of interactive widgets, drawn at random by Jupyter.
Figures are compared by their number, not their pixels (fonts and renderers differ between
machines); a cell that draws a figure must show it in the committed notebook too (a slider's
figure lives in the widget's saved state instead)."""
import ast
import glob
import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")) + glob.glob(os.path.join(NOTEBOOK_DIR, "*", "*.ipynb")))
CELL_TIMEOUT = 180  # seconds; a whole notebook takes well under a minute on a 2-core CPU
# a shell command in a cell (!python ../sample.py ...) does not raise when it fails: read its output
FAILED_COMMAND = re.compile(r"^(Traceback \(most recent call last\)|error: )", re.MULTILINE)
TIMING = re.compile(r"\d[\d,]*(\.\d+)?\s*(s\b|ms\b|seconds|minutes|characters/s|tokens/s|tok/s|x faster|×)")
WIDGET_ID = re.compile(r"model_id='?[0-9a-f]{32}'?")


def text_of(cell):
    """The text a code cell shows, masked as the module docstring says, and its number of figures."""
    parts, figures = [], 0
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            data = output.get("data", {})
            if "image/png" in data:
                figures += 1
            elif "text/plain" in data and "application/vnd.jupyter.widget-view+json" not in data:
                parts.append(data["text/plain"] + "\n")
        elif output.output_type == "error":
            parts.append(f"{output.ename}: {output.evalue}\n")
    text = "".join(parts).replace("\r\n", "\n")
    return WIDGET_ID.sub("model_id=…", TIMING.sub("<time>", text)), figures


def shows_a_figure(source):
    """The cell itself calls plt.show(), outside a function it only defines (a slider calls that
    function, and keeps the figure in the widget's saved state)."""
    python = "\n".join("" if line.lstrip().startswith("!") else line for line in source.splitlines())
    return any("plt.show()" in ast.get_source_segment(python, node) for node in ast.parse(python).body
               if not isinstance(node, ast.FunctionDef))


def test_one_notebook_per_idea():
    assert len(NOTEBOOKS) >= 10, f"expected at least 10 notebooks in {NOTEBOOK_DIR}, found {len(NOTEBOOKS)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: os.path.relpath(p, NOTEBOOK_DIR))
def test_notebook_runs_and_shows_what_is_committed(path, tmp_path, monkeypatch):
    monkeypatch.setenv("NANODECODE_FIGURES", str(tmp_path))  # saved figures go here, not to docs/figures
    # One thread: the model is small and decodes one character at a time, and a second thread
    # fighting other processes for a 2-core machine can slow a notebook down a hundredfold.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    committed = nbformat.read(path, as_version=4)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, kernel_name="python3", timeout=CELL_TIMEOUT,
                   resources={"metadata": {"path": os.path.dirname(path)}}).execute()  # raises on an error
    for number, (old, new) in enumerate(zip(committed.cells, notebook.cells)):
        if new.cell_type != "code":
            continue
        (old_text, old_figures), (new_text, new_figures) = text_of(old), text_of(new)
        assert not FAILED_COMMAND.search(new_text), f"a command failed in cell {number}:\n{new.source}\n{new_text}"
        assert new_text == old_text, (f"cell {number} of {os.path.basename(path)} shows something else than its "
                                      f"committed output: execute the notebook again and commit it\n{new.source}")
        assert new_figures == old_figures, f"cell {number}: {new_figures} figures now, {old_figures} committed"
        if shows_a_figure(new.source):
            assert new_figures > 0, f"cell {number} draws a figure but shows none:\n{new.source}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: os.path.relpath(p, NOTEBOOK_DIR))
def test_every_notebook_ends_with_exercises(path):
    cells = nbformat.read(path, as_version=4).cells
    start = next((i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("## ")
                  and ("Exercises" in c.source.splitlines()[0] or "练习" in c.source.splitlines()[0])), None)
    assert start is not None, f"{os.path.basename(path)} has no Exercises section"
    assert not any(c.cell_type == "markdown" and c.source.startswith("## ") for c in cells[start + 1:]), \
        "the Exercises section is not the last one"
    items = [c for c in cells[start:] if c.cell_type == "markdown" and re.match(r"\*\*\d\.", c.source)]
    answers = [c for c in cells[start:] if c.cell_type == "markdown" and "<details>" in c.source]
    assert 2 <= len(items) <= 4 and len(answers) == len(items), (len(items), len(answers))
