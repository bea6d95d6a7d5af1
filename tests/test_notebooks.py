"""Every notebook runs from top to bottom with the shipped checkpoint, as a reader would run it, and
shows what its committed copy shows: a code change that changes a notebook's text output fails
here until the notebook is executed again and committed (python plots.py, or Jupyter's
"Restart and run all"). Executing the notebooks takes minutes, so this test is marked `notebooks`:
the default run leaves it out and `python -m pytest -m notebooks` runs it, one notebook per core.

What may legitimately differ between two runs is masked before comparing, and nothing else:
  - durations and speeds ("12.3 s", "581 characters/s", "1.7x faster", "0.42 ms"): they depend on
    the machine and its load;
  - how a shell command's output was split into chunks, and its line endings (a terminal writes
    \\r\\n): the text is compared whole, per cell;
  - the ids of interactive widgets, drawn at random by Jupyter.

Text is compared exactly, numbers by what they are (another CPU, another BLAS, another thread
count or another PyTorch rounds float32 differently; one AMD machine gave 1.07e-05, 1.42e-05 and
1.88e-05 for the same cache gap):
  - an integer (a count, an id, a shape) must be equal;
  - a printed float may differ from the committed one by one unit in its last printed digit plus
    1e-5 of its value. Kernels that round differently change a float32 result by a few parts in
    10^7 (a few parts in 10^6 after a long sum); rounding that to the printed digits moves the
    last digit by at most one, and the relative 1e-5 covers values printed with all their digits;
  - a value that is itself a rounding error is printed with the bound the lesson states,
    "1.07e-05 < 1e-4": it is checked against that bound, not digit by digit;
  - spaces before a number are its alignment in a column and may change with its width.
Sampled and greedy text is compared exactly: a difference there means the seeded draws changed
(a PyTorch version that draws differently), and the failure message says so.
Figures are compared by their number, not their pixels (fonts and renderers differ between
machines); a cell that draws a figure must show it in the committed notebook too (a slider's
figure lives in the widget's saved state instead)."""
import ast
import difflib
import glob
import os
import re

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")) + glob.glob(os.path.join(NOTEBOOK_DIR, "*", "*.ipynb")))
CELL_TIMEOUT = 180  # seconds; a whole notebook takes well under a minute on a 2-core CPU
# a shell command in a cell (!python ../sample.py ...) does not raise when it fails: read its output
FAILED_COMMAND = re.compile(r"^(Traceback \(most recent call last\)|error: )", re.MULTILINE)
TIMING = re.compile(r"\d[\d,]*(\.\d+)?\s*(s\b|ms\b|seconds|minutes|characters/s|tokens/s|tok/s|x faster|×)")
WIDGET_ID = re.compile(r"model_id='?[0-9a-f]{32}'?")
FLOAT = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
AFTER = r"(?!\w|\.\d)"  # a number ends where no letter, digit or decimal part follows
NUMBER = re.compile(rf" *(?<![\w.])({FLOAT}){AFTER}")
BOUNDED = re.compile(rf" *(?<![\w.])({FLOAT}) < ({FLOAT}){AFTER}")
RELATIVE = 1e-5  # of a float's value, besides one unit in its last printed digit


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


def numbers_in(text):
    """The text with each number written '#' (the spaces before it dropped), the numbers as
    written, and each bounded value as (value, bound)."""
    bounds = BOUNDED.findall(text)
    text = BOUNDED.sub("#<", text)
    return NUMBER.sub("#", text), NUMBER.findall(text), bounds


def close_enough(old, new):
    """Two printed numbers agree: integers exactly, floats within one unit of the last printed
    digit plus RELATIVE of their value."""
    is_float = [any(c in number for c in ".e") for number in (old, new)]
    if not all(is_float):
        return old == new
    digits = re.match(r"-?\d+(?:\.(\d+))?(?:e([-+]?\d+))?$", old)
    unit = 10.0 ** (-len(digits[1] or "") + int(digits[2] or 0))
    return abs(float(old) - float(new)) <= unit + RELATIVE * abs(float(old))


def differences(old, new):
    """Why the text `new` does not show what `old` shows, as the module docstring defines it: a
    list of reasons, empty when it does."""
    (old_text, old_numbers, old_bounds), (new_text, new_numbers, new_bounds) = numbers_in(old), numbers_in(new)
    if old_text != new_text:
        diff = difflib.unified_diff(old.splitlines(), new.splitlines(), "committed", "now", lineterm="", n=1)
        return ["the text differs (where it shows seeded draws, those draws changed: another PyTorch may "
                "draw differently):\n" + "\n".join(diff)]
    problems = [f"{n} where {o} was committed" for o, n in zip(old_numbers, new_numbers) if not close_enough(o, n)]
    problems += [f"the bound is {n} where {o} was committed" for (_, o), (_, n) in zip(old_bounds, new_bounds) if o != n]
    return problems + [f"{value} is not below its bound {bound}" for value, bound in old_bounds + new_bounds
                       if not float(value) < float(bound)]


def shows_a_figure(source):
    """The cell itself calls plt.show(), outside a function it only defines (a slider calls that
    function, and keeps the figure in the widget's saved state)."""
    python = "\n".join("" if line.lstrip().startswith("!") else line for line in source.splitlines())
    return any("plt.show()" in ast.get_source_segment(python, node) for node in ast.parse(python).body
               if not isinstance(node, ast.FunctionDef))


def test_one_notebook_per_idea():
    assert len(NOTEBOOKS) >= 10, f"expected at least 10 notebooks in {NOTEBOOK_DIR}, found {len(NOTEBOOKS)}"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: os.path.relpath(p, NOTEBOOK_DIR))
def test_notebook_runs_and_shows_what_is_committed(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

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
        problems = differences(old_text, new_text)
        assert not problems, (f"cell {number} of {os.path.relpath(path, NOTEBOOK_DIR)} shows something else than its "
                              f"committed output: " + "; ".join(problems) + f"\n{new.source}")
        assert new_figures == old_figures, f"cell {number}: {new_figures} figures now, {old_figures} committed"
        if shows_a_figure(new.source):
            assert new_figures > 0, f"cell {number} draws a figure but shows none:\n{new.source}"


@pytest.mark.parametrize("old, new", [
    ("top-5 keeps 0.282 of 65", "top-5 keeps 0.283 of 65"),  # the last printed digit moves by one
    ("tensor([0.7000, 0.2000])", "tensor([0.7000, 0.2001])"),
    ("  9.999 |\n", " 10.000 |\n"),  # a wider number in a right-aligned column
    ("-0.000", "0.000"),
    ("x = 4.2875000000000005", "x = 4.287500000000001"),  # every digit of a float64: 1e-5 of its value
    ("gap: 1.07e-05 < 1e-4", "gap: 1.88e-05 < 1e-4"),  # a rounding error, checked against its bound
])
def test_numbers_may_differ_by_their_rounding(old, new):
    assert differences(old, new) == []


@pytest.mark.parametrize("old, new, reason", [
    ("And Nero to the world", "And Nero to the woes", "the text differs"),  # a draw changed
    ("kept 12 of 65", "kept 13 of 65", "13 where 12"),  # a count
    ("top-5 keeps 0.282", "top-5 keeps 0.284", "0.284 where 0.282"),  # two units of the last digit
    ("(1, 10)", "(1, 10.0)", "10.0 where 10"),
    ("gap: 1.07e-05 < 1e-4", "gap: 2.3e-04 < 1e-4", "not below its bound"),
    ("gap: 1.07e-05 < 1e-4", "gap: 1.07e-05 < 1e-3", "the bound is 1e-3"),
    ("gap: 1.07e-05", "gap: 1.42e-05", "1.42e-05 where 1.07e-05"),  # a rounding error without its bound
])
def test_what_the_numbers_may_not_do(old, new, reason):
    problems = differences(old, new)
    assert problems and reason in problems[0], problems


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
