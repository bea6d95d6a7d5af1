"""
Chinese in matplotlib figures on any machine: the font shipped in fonts/ (a subset of Noto Sans CJK
SC, see fonts/README.md), with no system font needed.

    import cjk
    cjk.use_chinese_font()      # then titles and tick labels such as 小 冬 瓜 draw as characters

(plots.py does this when it is imported.) The font joins rcParams["font.family"] after the
families already there (by default "sans-serif", that is DejaVu Sans): matplotlib draws each
character from the first family that has it, so Latin text looks as before and only the Chinese
characters, which DejaVu Sans lacks, come from the shipped font. Text given a family of its own
(family="monospace") does not use it.
"""
import os

import matplotlib
from matplotlib import font_manager

FONT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fonts", "NotoSansSC-subset.otf")


def use_chinese_font():
    """Register the shipped font with matplotlib, add its family last to rcParams["font.family"]
    (the fallback for characters the others lack) and return the family name. Calling it again
    changes nothing."""
    if not any(entry.fname == FONT for entry in font_manager.fontManager.ttflist):
        font_manager.fontManager.addfont(FONT)
    family = font_manager.get_font(FONT).family_name
    others = [name for name in matplotlib.rcParams["font.family"] if name != family]
    matplotlib.rcParams["font.family"] = others + [family]
    return family
