"""
What the command-line scripts share: an argument parser whose errors are one line, and the
escapes a shell argument may hold.
"""
import argparse


class Parser(argparse.ArgumentParser):
    """argparse, with every error on one line and exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def unescape(text):
    """A command-line argument with '\\n' written for a newline: '\\nAnd' -> '\nAnd'."""
    return text.replace("\\n", "\n")
