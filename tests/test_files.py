"""files.write_atomically: the whole new file or the untouched old one, and nothing else left behind."""
import os
import signal
import stat

import pytest

from files import ctrl_c_deferred, write_atomically


def test_writes_the_bytes_with_ordinary_permissions(tmp_path):
    path = tmp_path / "out.bin"
    write_atomically(str(path), lambda f: f.write(b"hello"))
    assert path.read_bytes() == b"hello"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, error):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def write(f):
        f.write(b"half of the new")
        raise error

    with pytest.raises(type(error)):
        write_atomically(str(path), write)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_a_link_at_the_old_temporary_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    path = tmp_path / "ckpt.pt"
    os.symlink(victim, str(path) + ".tmp")  # the fixed temporary name an earlier version used
    write_atomically(str(path), lambda f: f.write(b"new"))
    assert victim.read_bytes() == b"precious"
    assert path.read_bytes() == b"new"


def test_ctrl_c_during_a_deferred_write_comes_after_the_whole_file(tmp_path, ctrl_c_raises):
    path = tmp_path / "out.bin"

    def write(f):
        f.write(b"half")
        signal.raise_signal(signal.SIGINT)  # Ctrl-C, halfway
        f.write(b" and the rest")

    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_deferred():
            write_atomically(str(path), write)
    assert path.read_bytes() == b"half and the rest"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back


def test_a_deferred_block_without_ctrl_c_raises_nothing(ctrl_c_raises):
    with ctrl_c_deferred():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
