"""
What the command-line scripts share: an argument parser whose errors are one line, the escapes a
shell argument may hold, and a check, before PyTorch is imported, that PyTorch and NumPy can run
them at all.
"""
import argparse
import re
import sys
from importlib import metadata


class Parser(argparse.ArgumentParser):
    """argparse, with every error on one line and exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def unescape(text):
    """A command-line argument with '\\n' written for a newline: '\\nAnd' -> '\nAnd'."""
    return text.replace("\\n", "\n")


def version(package):
    """The installed version of a package as (major, minor) and as written, or None when pip
    does not know it (a build from source may not say)."""
    try:
        written = metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
    numbers = re.match(r"(\d+)\.(\d+)", written)
    return ((int(numbers[1]), int(numbers[2])), written) if numbers else None


def versions_problem(torch_version, numpy_version):
    """Why PyTorch and NumPy at these versions ((major, minor), written) cannot run the scripts, in
    one line, or None. PyTorch 2.1 added LayerNorm(bias=...), which model.py needs; PyTorch 2.2 and
    older were built against NumPy 1 and fail beside NumPy 2 (requirements.txt)."""
    if torch_version is None:
        return None
    (torch_number, torch_written), numpy_2 = torch_version, numpy_version is not None and numpy_version[0] >= (2, 0)
    if torch_number < (2, 1):
        return f"PyTorch {torch_written} is too old for these scripts: install PyTorch 2.3 or newer (requirements.txt)"
    if torch_number < (2, 3) and numpy_2:
        return (f"PyTorch {torch_written} was built for NumPy 1 and cannot use NumPy {numpy_version[1]}: "
                "install PyTorch 2.3 or newer (requirements.txt), or NumPy 1 (pip install 'numpy<2')")
    return None


def require_torch_and_numpy():
    """Stop with one line and exit status 1 where the installed PyTorch and NumPy cannot run the
    scripts. Called before `import torch`, which on such a pair prints pages of warnings."""
    problem = versions_problem(version("torch"), version("numpy"))
    if problem:
        sys.exit(f"error: {problem}")
