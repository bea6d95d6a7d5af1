"""The README promises what the code does: every decoding flag in its table, every command it
shows, every file it names."""
import os
import re
from dataclasses import fields

from conftest import ROOT
from sampling import Decoding

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
