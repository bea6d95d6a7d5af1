"""cli.py: what the command-line scripts share. Here, the check that the installed PyTorch and
NumPy can run sample.py and train.py, made before either script imports torch."""
import ast
import os

import pytest

import cli
from conftest import ROOT


@pytest.mark.parametrize("torch_version, numpy_version, fragment", [
    (((2, 0), "2.0.1"), ((1, 26), "1.26.4"), "PyTorch 2.0.1 is too old"),
    (((2, 2), "2.2.2"), ((2, 4), "2.4.6"), "PyTorch 2.2.2 was built for NumPy 1 and cannot use NumPy 2.4.6"),
    (((2, 1), "2.1.2+cu121"), ((2, 0), "2.0.0"), "PyTorch 2.1.2+cu121 was built for NumPy 1"),
])
def test_a_pair_that_cannot_work_is_named_in_one_line(torch_version, numpy_version, fragment, monkeypatch):
    monkeypatch.setattr(cli, "version", {"torch": torch_version, "numpy": numpy_version}.get)
    with pytest.raises(SystemExit) as stop:
        cli.require_torch_and_numpy()
    message = str(stop.value.code)
    assert message.startswith("error: ") and fragment in message and "\n" not in message


@pytest.mark.parametrize("torch_version, numpy_version", [
    (((2, 2), "2.2.2"), ((1, 26), "1.26.4")),  # NumPy 1: PyTorch 2.1 and 2.2 run
    (((2, 3), "2.3.0"), ((2, 4), "2.4.6")),
    (((2, 14), "2.14.1"), ((2, 4), "2.4.6")),
    (None, ((2, 4), "2.4.6")),  # a PyTorch pip does not know (built from source): not judged
])
def test_a_pair_that_works_passes(torch_version, numpy_version, monkeypatch):
    monkeypatch.setattr(cli, "version", {"torch": torch_version, "numpy": numpy_version}.get)
    cli.require_torch_and_numpy()


def test_the_installed_versions_are_read():
    (torch_number, torch_written), (numpy_number, _) = cli.version("torch"), cli.version("numpy")
    import numpy
    import torch

    assert torch.__version__.startswith(torch_written.split("+")[0]) and torch_number >= (2, 3)
    assert numpy.__version__.startswith(f"{numpy_number[0]}.{numpy_number[1]}")
    assert cli.version("no-such-package-here") is None


@pytest.mark.parametrize("script", ["sample.py", "train.py"])
def test_the_scripts_check_before_they_import_torch(script):
    """The check must come first: importing such a PyTorch prints pages before any line of ours."""
    tree = ast.parse(open(os.path.join(ROOT, script), encoding="utf-8").read())
    lines = {ast.unparse(node): node.lineno for node in tree.body}
    assert lines["cli.require_torch_and_numpy()"] < lines["import torch"]
