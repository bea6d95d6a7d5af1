"""prepare.py: copy or download Tiny Shakespeare, build the vocabulary and the splits."""
import http.server
import os
import pickle
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import CHARS, ROOT, SHAKESPEARE, ctrl_c_reaches_it
from data.shakespeare_char import prepare

SCRIPT = os.path.join(ROOT, "data", "shakespeare_char", "prepare.py")


class Server:
    """A loopback HTTP server: /input.txt serves `body`, /missing answers 404, /truncated
    promises the whole file but closes the connection halfway, /slow sends one byte every
    0.1 s, /endless sends the text over and over without end."""

    def __init__(self, body):
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                if self.path not in ("/input.txt", "/truncated", "/slow", "/endless"):
                    self.send_error(404)
                    return
                self.send_response(200)
                if self.path != "/endless":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if self.path == "/input.txt":
                        self.wfile.write(body)
                    elif self.path == "/truncated":
                        self.wfile.write(body[: len(body) // 2])
                    elif self.path == "/slow":
                        for i in range(len(body)):
                            self.wfile.write(body[i:i + 1])
                            time.sleep(0.1)
                    else:
                        while True:
                            self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as it should
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def text_bytes(shakespeare_path):
    with open(shakespeare_path, "rb") as f:
        return f.read()


@pytest.fixture
def server(text_bytes):
    s = Server(text_bytes)
    yield s
    s.close()


def run_main(capsys, *args):
    """prepare.py's main in this process: (exit status, stdout, stderr)."""
    status = prepare.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status, err, *fragments):
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


def test_the_committed_text_is_tiny_shakespeare():
    assert os.path.getsize(SHAKESPEARE) == 1_115_394
    assert prepare.sha256_of(SHAKESPEARE) == prepare.SHA256


def test_figures_vocabulary_and_splits(prepared):
    out, meta = prepared
    assert os.path.getsize(out / "input.txt") == 1_115_394  # ASCII: one byte per character
    assert meta["vocab_size"] == 65
    assert "".join(meta["itos"][i] for i in range(65)) == CHARS
    assert [meta["stoi"][c] for c in "\nAnd Nero "] == [0, 13, 52, 42, 1, 26, 43, 56, 53, 1]
    train = np.fromfile(out / "train.bin", dtype=np.uint16)
    val = np.fromfile(out / "val.bin", dtype=np.uint16)
    assert (len(train), len(val)) == (1_003_854, 111_540)  # int(0.9 * 1,115,394) and the rest
    text = (out / "input.txt").read_text()
    assert "".join(meta["itos"][int(i)] for i in val[:100]) == text[1_003_854:1_003_954]
    with open(out / "meta.pkl", "rb") as f:
        assert pickle.load(f) == meta  # nanoGPT's format: vocab_size, stoi, itos


def test_split_gives_the_text_and_its_ids_the_same_cut():
    """study.py and the n-gram drafter split the text; train.bin and val.bin split its ids."""
    text = "abcdefghij" * 3  # 30 characters: int(0.9 * 30) = 27 for training
    assert prepare.split(text) == (text[:27], "hij")
    train, val = prepare.split(np.arange(30))
    assert (len(train), val.tolist()) == (27, [27, 28, 29])


def test_prints_the_figures(tmp_path, capsys):
    status, out, _ = run_main(capsys, "--input", SHAKESPEARE, "--out_dir", str(tmp_path))
    assert status == 0
    assert "1,115,394 characters, 65 symbols" in out
    assert "1,003,854 train tokens, 111,540 val tokens" in out


def test_download_from_loopback_server(tmp_path, server):
    prepare.prepare(str(tmp_path), url=server.url + "/input.txt")
    assert prepare.sha256_of(tmp_path / "input.txt") == prepare.SHA256
    assert server.requests == 1


def test_valid_existing_file_is_not_fetched_again(prepared, server):
    out, _ = prepared
    prepare.prepare(str(out), url=server.url + "/input.txt")
    assert server.requests == 0


@pytest.mark.parametrize("existing", ["valid", "corrupt"])
def test_download_flag_fetches_the_text_again(tmp_path, server, capsys, existing):
    (tmp_path / "input.txt").write_bytes(open(SHAKESPEARE, "rb").read() if existing == "valid" else b"half a play")
    status, out, _ = run_main(capsys, "--download", "--url", server.url + "/input.txt", "--out_dir", str(tmp_path))
    assert status == 0 and server.requests == 1 and f"downloading {server.url}/input.txt" in out
    assert prepare.sha256_of(tmp_path / "input.txt") == prepare.SHA256


def test_corrupt_existing_file_is_downloaded_again(tmp_path, server):
    (tmp_path / "input.txt").write_text("half a play")
    prepare.prepare(str(tmp_path), url=server.url + "/input.txt")
    assert prepare.sha256_of(tmp_path / "input.txt") == prepare.SHA256 and server.requests == 1


@pytest.mark.parametrize("path, fragment", [("/missing", "404"), ("/truncated", "")])
def test_failed_download_leaves_nothing_behind(tmp_path, server, capsys, path, fragment):
    status, _, err = run_main(capsys, "--url", server.url + path, "--out_dir", str(tmp_path))
    assert_one_line_error(status, err, fragment)
    assert os.listdir(tmp_path) == []


def test_unreachable_address(tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status, _, err = run_main(capsys, "--url", f"http://127.0.0.1:{port}/input.txt", "--out_dir", str(tmp_path))
    assert_one_line_error(status, err, "could not download")
    assert os.listdir(tmp_path) == []


def test_a_trickling_server_meets_the_deadline(tmp_path, server):
    """One byte every 0.1 s never trips the timeout of each read; the deadline of the whole download does."""
    started = time.monotonic()
    with pytest.raises(prepare.PrepareError, match="took more than 1 s"):
        prepare.prepare(str(tmp_path), url=server.url + "/slow", deadline=1)
    assert time.monotonic() - started < 5
    assert os.listdir(tmp_path) == []


def test_an_endless_body_is_cut_at_the_size_of_the_text(tmp_path, server):
    with pytest.raises(prepare.PrepareError, match="more than 1,115,394 bytes"):
        prepare.prepare(str(tmp_path), url=server.url + "/endless", deadline=30)
    assert os.listdir(tmp_path) == []


def test_ctrl_c_during_the_download_is_one_line(tmp_path, server):
    process = subprocess.Popen([sys.executable, SCRIPT, "--url", server.url + "/slow", "--out_dir", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_reaches_it)
    deadline = time.monotonic() + 30
    while server.requests == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # a few bytes into the body
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert err.strip().splitlines() == ["error: interrupted; no file was left half-written"]
    assert os.listdir(tmp_path) == []


def test_wrong_checksum_input_is_refused(tmp_path, capsys):
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("To be, or not to be\n")
    out = tmp_path / "out"
    status, _, err = run_main(capsys, "--input", str(wrong), "--out_dir", str(out))
    assert_one_line_error(status, err, "is not Tiny Shakespeare")
    assert os.listdir(out) == []


def test_missing_input(tmp_path, capsys):
    status, _, err = run_main(capsys, "--input", str(tmp_path / "nowhere.txt"), "--out_dir", str(tmp_path))
    assert_one_line_error(status, err, "no such file")


def test_corrupt_existing_file_is_replaced(tmp_path, shakespeare_path):
    (tmp_path / "input.txt").write_text("half a play")
    prepare.prepare(str(tmp_path), input_path=shakespeare_path)
    assert prepare.sha256_of(tmp_path / "input.txt") == prepare.SHA256


@pytest.mark.parametrize("where", ["a_file", "below_a_file"])
def test_an_out_dir_that_cannot_be_a_folder(tmp_path, capsys, where):
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" if where == "a_file" else tmp_path / "file" / "data"
    status, _, err = run_main(capsys, "--input", SHAKESPEARE, "--out_dir", str(out))
    assert_one_line_error(status, err, str(out))
    assert os.listdir(tmp_path) == ["file"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_dir(tmp_path, capsys):
    out = tmp_path / "read_only"
    out.mkdir()
    out.chmod(0o555)
    status, _, err = run_main(capsys, "--input", SHAKESPEARE, "--out_dir", str(out))
    assert_one_line_error(status, err, "Permission denied")
    assert os.listdir(out) == []


def test_a_full_disk_leaves_no_partial_file(tmp_path):
    """Files are limited to 1.5 MB (RLIMIT_FSIZE): input.txt (1.1 MB) fits, train.bin (2 MB) does not."""
    limit = 1_500_000
    result = subprocess.run([sys.executable, SCRIPT, "--input", SHAKESPEARE, "--out_dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert_one_line_error(result.returncode, result.stderr, "File too large")
    assert os.listdir(tmp_path) == ["input.txt"]  # whole and checked; nothing half-written beside it
    assert prepare.sha256_of(tmp_path / "input.txt") == prepare.SHA256


def test_a_link_planted_at_a_temporary_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(victim, out / "train.bin.tmp")  # the fixed temporary name prepare.py once used
    prepare.prepare(str(out), input_path=SHAKESPEARE)
    assert victim.read_bytes() == b"precious"
    assert os.path.getsize(out / "train.bin") == 2 * 1_003_854
