"""prepare.py: copy or download Tiny Shakespeare, build the vocabulary and the splits."""
import http.server
import os
import pickle
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from conftest import CHARS, ROOT, SHAKESPEARE
from data.shakespeare_char import prepare

SCRIPT = os.path.join(ROOT, "data", "shakespeare_char", "prepare.py")


class Server:
    """A loopback HTTP server: /input.txt serves `body`, /missing answers 404, /truncated
    promises the whole file but closes the connection halfway."""

    def __init__(self, body):
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                if self.path == "/input.txt":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif self.path == "/truncated":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                else:
                    self.send_error(404)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

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


def run_script(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=60)


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


def test_prints_the_figures(tmp_path, shakespeare_path):
    result = run_script("--input", shakespeare_path, "--out_dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "1,115,394 characters, 65 symbols" in result.stdout
    assert "1,003,854 train tokens, 111,540 val tokens" in result.stdout


def test_download_from_loopback_server(tmp_path, server):
    prepare.prepare(str(tmp_path), url=server.url + "/input.txt")
    assert prepare.sha256_of(tmp_path / "input.txt") == prepare.SHA256
    assert server.requests == 1


def test_valid_existing_file_is_not_fetched_again(prepared, server):
    out, _ = prepared
    prepare.prepare(str(out), url=server.url + "/input.txt")
    assert server.requests == 0


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("path, fragment", [("/missing", "404"), ("/truncated", "")])
def test_failed_download_leaves_nothing_behind(tmp_path, server, path, fragment):
    result = run_script("--url", server.url + path, "--out_dir", str(tmp_path))
    assert_one_line_error(result, fragment)
    assert os.listdir(tmp_path) == []


def test_unreachable_address(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_script("--url", f"http://127.0.0.1:{port}/input.txt", "--out_dir", str(tmp_path))
    assert_one_line_error(result, "could not download")
    assert os.listdir(tmp_path) == []


def test_wrong_checksum_input_is_refused(tmp_path):
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("To be, or not to be\n")
    out = tmp_path / "out"
    result = run_script("--input", str(wrong), "--out_dir", str(out))
    assert_one_line_error(result, "is not Tiny Shakespeare")
    assert os.listdir(out) == []


def test_missing_input(tmp_path):
    result = run_script("--input", str(tmp_path / "nowhere.txt"), "--out_dir", str(tmp_path))
    assert_one_line_error(result, "no such file")


def test_corrupt_existing_file_is_replaced(tmp_path, shakespeare_path):
    (tmp_path / "input.txt").write_text("half a play")
    prepare.prepare(str(tmp_path), input_path=shakespeare_path)
    assert prepare.sha256_of(tmp_path / "input.txt") == prepare.SHA256
