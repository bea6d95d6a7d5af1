"""The Chinese edition: each notebook under notebooks/zh/ is its English twin with the prose and
the labels translated. Its code cells are the English ones, string literals aside (a label may be
Chinese, and an f-string may put its values in another order); a shell command may add --lang zh."""
import ast
import glob
import os
import re

import nbformat
import pytest

from conftest import ROOT

ZH = sorted(glob.glob(os.path.join(ROOT, "notebooks", "zh", "*.ipynb")))
CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
CORE = ["01_greedy", "02_multinomial", "03_temperature", "04_top_k", "05_repetition_penalty", "12_playground", "13_steering"]


class Labels(ast.NodeTransformer):
    """Replace every string literal, f-strings included, by one placeholder; keep an f-string's
    values, in sorted order, so that a translation may move them but not change them."""

    def visit_Constant(self, node):
        return ast.Constant("…") if isinstance(node.value, str) else node

    def visit_JoinedStr(self, node):
        values = sorted(ast.dump(v.value) for v in node.values if isinstance(v, ast.FormattedValue))
        return ast.Constant("… " + " ".join(values))


def skeleton(source):
    """A code cell's source with its labels masked: (the AST of its Python lines, its shell lines)."""
    shell = [line.strip().replace(" --lang zh", "") for line in source.splitlines() if line.lstrip().startswith("!")]
    python = "\n".join("pass" if line.lstrip().startswith("!") else line for line in source.splitlines())
    return ast.dump(Labels().visit(ast.parse(python))), shell


def test_the_core_lessons_and_the_playground_have_a_chinese_edition():
    assert [os.path.basename(p)[:-6] for p in ZH] == CORE


@pytest.mark.parametrize("path", ZH, ids=os.path.basename)
def test_code_cells_are_the_english_ones(path):
    zh = nbformat.read(path, as_version=4).cells
    en = nbformat.read(os.path.join(ROOT, "notebooks", os.path.basename(path)), as_version=4).cells
    assert [c.cell_type for c in zh] == [c.cell_type for c in en], "the cells do not pair up with the English ones"
    for number, (a, b) in enumerate(zip(zh, en)):
        if a.cell_type == "code":
            assert skeleton(a.source) == skeleton(b.source), f"code cell {number} differs:\n{a.source}\n---\n{b.source}"


@pytest.mark.parametrize("path", ZH, ids=os.path.basename)
def test_the_prose_is_chinese(path):
    prose = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]
    untranslated = [text[:80] for text in prose if len(text) > 40 and not CJK.search(text)]
    assert not untranslated, f"markdown cells without Chinese: {untranslated}"


def test_the_readme_has_a_chinese_twin_linked_from_its_first_line():
    assert "README.zh-CN.md" in open(os.path.join(ROOT, "README.md"), encoding="utf-8").readline()
    text = open(os.path.join(ROOT, "README.zh-CN.md"), encoding="utf-8").read()
    assert "README.md" in text.splitlines()[0] and len(CJK.findall(text)) > 1000
