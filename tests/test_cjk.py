"""The Chinese font of fonts/: matplotlib finds it, draws 小冬瓜 with it (and ⏎ with the fallback), it
holds every CJK character of the Chinese notebooks' code cells, and its licence lies beside it."""
import importlib.util
import io
import json
import os
import re
import warnings

import matplotlib
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties, findfont, fontManager
from matplotlib.ft2font import FT2Font

import cjk
import plots

CJK = re.compile("[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")


def load_subset_script():
    """fonts/subset.py as a module (fonts/ is not a package); importing it needs no fontTools."""
    path = os.path.join(os.path.dirname(cjk.FONT), "subset.py")
    spec = importlib.util.spec_from_file_location("fonts_subset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def missing_glyph_warnings(labels):
    """Draw a bar chart with labels as tick labels and, joined, as title; return the messages of
    matplotlib's "Glyph ... missing from font(s) ..." warnings."""
    fig = Figure(figsize=(3, 2))
    ax = fig.subplots()
    ax.bar(range(len(labels)), range(len(labels), 0, -1))
    ax.set_xticks(range(len(labels)), labels)
    ax.set_title(" ".join(labels))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(io.BytesIO(), format="png")
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


@pytest.fixture
def family():
    """use_chinese_font() for one test; the rcParams are restored afterwards."""
    with matplotlib.rc_context():
        yield cjk.use_chinese_font()


def test_matplotlib_finds_the_shipped_font(family):
    assert family == FT2Font(cjk.FONT).family_name == "Noto Sans SC Subset"
    assert findfont(FontProperties(family=family)) == cjk.FONT
    assert findfont(FontProperties()) != cjk.FONT  # Latin text keeps the default font: ours is the fallback


def test_use_chinese_font_twice_changes_nothing(family):
    families = list(matplotlib.rcParams["font.family"])
    assert cjk.use_chinese_font() == family
    assert matplotlib.rcParams["font.family"] == families
    assert families[-1] == family and families.count(family) == 1
    assert [entry.fname for entry in fontManager.ttflist].count(cjk.FONT) == 1


def test_chinese_draws_without_missing_glyphs(family):
    assert missing_glyph_warnings(["小", "冬", "瓜"]) == []


def test_characters_the_font_lacks_come_from_the_fallback(family):
    """⇥: a character no notebook writes, so the subset leaves it out (⏎ is in it since notebook 13 labels with it)."""
    assert ord("⇥") not in FT2Font(cjk.FONT).get_charmap()
    assert missing_glyph_warnings(["小", "⇥", "A"]) == []


def test_without_the_font_chinese_is_missing():
    """The check above can fail: DejaVu Sans has no Chinese."""
    with matplotlib.rc_context({"font.family": ["DejaVu Sans"]}):
        assert len(missing_glyph_warnings(["小", "冬", "瓜"])) >= 3


def test_characters_come_from_code_cells_only(tmp_path):
    subset = load_subset_script()
    os.makedirs(tmp_path / "notebooks" / "zh")
    cells = [{"cell_type": "code", "source": ["ax.set_title('鑫')\n", "x = 1"]},
             {"cell_type": "code", "source": "print('犇')"},
             {"cell_type": "markdown", "source": ["# 龘"]}]
    (tmp_path / "notebooks" / "zh" / "00_test.ipynb").write_text(json.dumps({"cells": cells}), "utf-8")
    chars = subset.characters(tmp_path)
    assert {"鑫", "犇", "小", "冬", "瓜", "，", "A", " "} <= set(chars)
    assert "龘" not in chars and "\n" not in chars
    assert "鑫" not in subset.characters(tmp_path / "elsewhere")


def test_font_holds_every_cjk_character_of_the_chinese_notebooks():
    """The base set, plots.py and notebooks/zh/*.ipynb: rerun python fonts/subset.py when this fails."""
    wanted = CJK.findall(load_subset_script().characters())
    assert {"小", "冬", "瓜", "，", "。"} | set("".join(plots.WORDS["zh"].values())) - {" ", "{", "}"} <= set(wanted)
    charmap = FT2Font(cjk.FONT).get_charmap()
    assert [c for c in wanted if ord(c) not in charmap] == []


def test_licence_lies_beside_the_font():
    with open(os.path.join(os.path.dirname(cjk.FONT), "OFL.txt"), encoding="utf-8") as f:
        assert "SIL OPEN FONT LICENSE Version 1.1" in f.read()


def test_the_chinese_notebooks_get_chinese_axis_labels():
    fig = Figure()
    try:
        plots.use_language("zh")
        ax = plots.bar_distribution(fig.subplots(), torch.tensor([0.7, 0.2, 0.1]), ["小", "冬", "瓜"])
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("下一个字符", "概率")
        with pytest.raises(ValueError, match="language must be one of en, zh"):
            plots.use_language("fr")
    finally:
        plots.use_language("en")
    ax = plots.grouped_bars(fig.subplots(), {"τ = 1": [0.7, 0.3]}, ["小", "冬"])
    assert ax.get_ylabel() == "probability"
