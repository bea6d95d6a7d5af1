"""
Write a file so that it is either wholly there or not changed at all.

    write_atomically("docs/study.csv", lambda f: f.write(b"..."))

Every file the project writes (checkpoints, prepared data, the study's table, figures) goes
through write_atomically(): the bytes go to a new temporary file in the same folder, created
with a fresh random name (never through an existing file or a link planted at a fixed name),
which is renamed over the target only once it is complete. A crash, a full disk or Ctrl-C
leaves the old file whole and no temporary file behind.

Some writers cannot be stopped halfway cleanly: torch.save, interrupted inside its zip writer,
raises a RuntimeError of its own in place of the KeyboardInterrupt. checkpoint.save() writes
inside ctrl_c_deferred(), which holds Ctrl-C until the file is written, then delivers it.
"""
import contextlib
import os
import signal
import tempfile
import threading


def write_atomically(path, write):
    """Call write(f) on a new temporary binary file beside `path`, then rename it to `path`.

    Missing folders on the way are created. The file gets the permissions a plainly created file would get (0666 less the umask).
    Any exception, KeyboardInterrupt included, removes the temporary file and propagates."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def ctrl_c_deferred():
    """Hold Ctrl-C (SIGINT) until the block has finished, then deliver it to the handler that was
    there before (Python's raises KeyboardInterrupt). Signals reach the main thread only: elsewhere
    this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)
