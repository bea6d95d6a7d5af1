"""The README promises what the code does: every decoding flag in its table, every command it
shows, every file it names."""
import glob
import os
import re
from dataclasses import fields

import pytest

from conftest import ROOT
from sampling import Decoding
from test_notebooks import differences

README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def section(title):
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def test_every_decoding_flag_is_in_the_decoding_table():
    table = section("Decoding, flag by flag")
    missing = [f.name for f in fields(Decoding) if f"--{f.name}" not in table]
    assert not missing, f"flags missing from the README's decoding table: {missing}"


def test_every_file_the_layout_names_exists():
    layout = section("Layout")
    names = re.findall(r"^([\w./-]+)\s", layout.split("```")[1], re.MULTILINE)
    assert names, layout
    for name in names:
        assert os.path.exists(os.path.join(ROOT, name)), f"the README's layout names {name}, which does not exist"


def test_the_readme_names_every_module_and_notebook():
    """A learner finds the way by file names: every module in the layout, every notebook in the table."""
    layout, notebooks = section("Layout"), section("Notebooks")
    modules = [os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "*.py"))]
    assert [m for m in modules if f"\n{m} " not in layout] == [], "modules missing from the README's layout"
    lessons = [os.path.basename(p)[:-len(".ipynb")] for p in glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb"))]
    assert [n for n in lessons if f"| `{n}` |" not in notebooks] == [], "notebooks missing from the README's table"


DOCUMENTS = ["README.md", "README.zh-CN.md", "docs/cheatsheet.md", "docs/lesson-plan.md", "docs/lesson-plan.zh-CN.md"]
FOLDERS = ("bench", "checkpoints", "config", "data", "docs", "fonts", "notebooks", "tests")  # tracked ones


@pytest.mark.parametrize("doc", DOCUMENTS)
def test_every_file_a_document_names_exists(doc):
    """Links and images to files of the repository ([text](path), ![alt](path)), and paths in
    backquotes under its tracked folders (`docs/figures/top_k.png`); not the web, not what a
    command writes (out/, slides)."""
    text = open(os.path.join(ROOT, doc), encoding="utf-8").read()
    links = [os.path.join(os.path.dirname(doc), t.split("#")[0])
             for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"\w+:|#", t)]
    quoted = [t for t in re.findall(r"`([\w./-]+)`", text) if t.split("/")[0] in FOLDERS and "/" in t
              and not t.endswith(".slides.html")]  # what jupyter nbconvert --to slides writes
    assert links + quoted, f"{doc} names no file of the repository"
    missing = [t for t in links + quoted if not os.path.exists(os.path.join(ROOT, t))]
    assert not missing, f"{doc} names files that do not exist: {missing}"


def test_the_study_section_is_generated_from_the_committed_results():
    """python study.py writes docs/study.csv and this section from it; a claim the numbers no longer
    support makes readme_section raise."""
    import study

    start, end = README.index(study.README_BEGIN), README.index(study.README_END) + len(study.README_END)
    assert README[start:end] == study.readme_section(study.read_csv(study.DEFAULT_CSV)), \
        "the README's study section is stale: run python study.py --readme"


def test_a_claim_the_numbers_do_not_support_is_refused():
    import pytest
    import study

    rows = study.read_csv(study.DEFAULT_CSV)
    rows["beam search, 4 beams"]["repetition_low"] = 0.0  # beam search no longer clearly repeats more
    with pytest.raises(ValueError, match="no longer supports"):
        study.readme_section(rows)


def test_the_training_table_quotes_the_shipped_checkpoints():
    import checkpoint

    table = section("The model and how it was trained")
    for name, recipe in [("shakespeare_char.pt", "config/train_shakespeare_char.py"), ("draft.pt", "config/train_draft.py")]:
        ckpt = checkpoint.read(os.path.join(ROOT, "checkpoints", name))
        row = next(line for line in table.splitlines() if line.startswith(f"| `{recipe}`"))
        assert f"{ckpt['best_val_loss']:.4f}" in row and f"{ckpt['iter_num']:,} iterations" in row, row


def test_the_lesson_shown_in_the_readme_is_what_the_walkthrough_prints(capsys):
    import sample

    assert sample.main(["--walkthrough"]) == 0
    printed = capsys.readouterr().out
    lesson = section("The lesson")
    example = lesson.split("```")[3]  # the second code block: the walkthrough's output
    lines = printed.splitlines()
    for line in example.strip("\n").splitlines():  # numbers to their printed precision, as the notebooks'
        if line.strip() != "...":
            assert any(not differences(line, shown) for shown in lines), \
                f"the README shows a line the walkthrough does not print:\n{line}"
    for quote in re.findall(r'\*"(.+?)"\*', lesson.replace("\n", " ")):
        assert quote in printed.replace("\n", " "), f"the README quotes text the walkthrough does not write: {quote}"


def test_the_benchmark_numbers_are_the_recorded_ones():
    """Every speed and ratio in the README's tables of measurements, and the two benchmarked rows of
    the training table, appear in the output their benchmark recorded with --save (docs/bench/)."""
    recorded = " ".join(open(path, encoding="utf-8").read().replace("x", "×") for path in
                        sorted(glob.glob(os.path.join(ROOT, "docs", "bench", "*.txt"))))
    quoted = []
    for row in section("Faster decoding").splitlines():
        if row.startswith("|") and not set(row) <= set("|-: "):
            quoted += re.findall(r"\d+\.\d+×|\b\d{2,4}\b", row.split("|", 2)[-1])
    for row in section("The model and how it was trained").splitlines():
        if row.startswith(("| `config/train_quick.py`", "| nanoGPT's documented CPU recipe")):
            quoted += re.findall(r"\d+\.\d+", "|".join(row.split("|")[3:]))
    assert len(quoted) > 50
    missing = [number for number in quoted if number not in recorded]
    assert not missing, f"numbers in the README that its benchmarks did not record: {missing}"


def test_the_page_s_numbers_are_the_recorded_ones():
    """The speeds, ratios and errors the README gives for the web page are in the output that
    python bench/bench_web.py --save recorded (docs/bench/web.txt)."""
    recorded = open(os.path.join(ROOT, "docs", "bench", "web.txt"), encoding="utf-8").read().replace("x", "×")
    measured = section("The lesson in a browser").split("Measured with")[1].split("A token is")[0]
    quoted = re.findall(r"\d+\.\d+×|\b\d{3}\b|\d\.\de-\d+|0\.\d{3}\b", measured)
    assert len(quoted) >= 7, quoted
    missing = [number for number in quoted if number not in recorded and number != "1.5×"]  # 1.5×: the goal
    assert not missing, f"numbers the benchmark did not record: {missing}"


def test_the_torchrun_numbers_are_the_recorded_ones():
    """The speeds and ratios of "More than one process" are in the output of
    python bench/bench_torchrun.py --save (docs/bench/torchrun.txt)."""
    recorded = open(os.path.join(ROOT, "docs", "bench", "torchrun.txt"), encoding="utf-8").read().replace("x", "×")
    measured = section("The model and how it was trained").split("### More than one process")[1]
    measured = measured.split("On this 2-core CPU")[1]
    quoted = re.findall(r"\d+\.\d+×|\d+,\d{3}|\d+\.\d s", measured)
    assert len(quoted) >= 7, quoted
    missing = [n for n in quoted if n.replace(" s", "s") not in recorded]  # "27.4 s" is recorded as "27.4s"
    assert not missing, f"numbers the benchmark did not record: {missing}"
