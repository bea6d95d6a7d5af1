"""
Prepare Tiny Shakespeare for character-level language modelling.

    python data/shakespeare_char/prepare.py                 # from the input.txt that ships here
    python data/shakespeare_char/prepare.py --download      # download input.txt again first
    python data/shakespeare_char/prepare.py --input FILE    # or copy a local copy

input.txt ships with the repository; it is downloaded only when it is missing or fails its
checksum, or with --download. train.py runs this by itself when the files below are missing.
Writes, next to this file (or in --out_dir):
    input.txt   the text (1,115,394 characters), checked against its sha256
    train.bin   the first 90% as uint16 token ids
    val.bin     the last 10%
    meta.pkl    {'vocab_size': 65, 'stoi': {char: id}, 'itos': {id: char}}  (nanoGPT's format)
"""
import argparse
import hashlib
import os
import pickle
import sys
import time

import numpy as np
import requests
import urllib3

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:  # run as a script: files.py is in the repository's root
    sys.path.insert(0, ROOT)
from files import write_atomically  # noqa: E402

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SIZE = 1_115_394  # bytes (the text is ASCII): a longer body is not the text
TIMEOUT = 30  # seconds to connect, and for each read
DEADLINE = 300  # seconds for the whole download
CHUNK = 1 << 16
FILES = ("train.bin", "val.bin", "meta.pkl")
TEXT = os.path.join(HERE, "input.txt")  # the text that ships with the repository
TRAIN_FRACTION = 0.9  # the first 90% of the text trains the model, the last 10% validates it


class PrepareError(Exception):
    """The text cannot be had or is not Tiny Shakespeare; the message is one line for the user."""


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def is_tiny_shakespeare(path):
    return os.path.isfile(path) and os.path.getsize(path) == SIZE and sha256_of(path) == SHA256


def file_chunks(path):
    """The bytes of a local file, a chunk at a time."""
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def download_chunks(url, timeout=TIMEOUT, deadline=DEADLINE):
    """The body at url, a chunk at a time as it arrives. Any failure is a PrepareError, and so is a
    download that takes longer than `deadline` seconds in all: the timeout bounds each read only,
    so a server sending a byte every few seconds would otherwise never end."""
    started = time.monotonic()
    try:
        with requests.get(url, stream=True, timeout=timeout) as response:
            response.raise_for_status()
            while chunk := response.raw.read1(CHUNK, decode_content=True):  # what has arrived, no more
                if time.monotonic() - started > deadline:
                    raise PrepareError(f"could not download {url}: it took more than {deadline} s")
                yield chunk
    except (requests.RequestException, urllib3.exceptions.HTTPError) as e:
        raise PrepareError(f"could not download {url}: {e}")


def save_text(path, chunks, source):
    """Write the chunks to path, whole or not at all: refused when they are longer than the text
    (an endless body never fills the memory or the disk) or fail its checksum."""
    def write(f):
        digest, size = hashlib.sha256(), 0
        for chunk in chunks:
            size += len(chunk)
            if size > SIZE:
                raise PrepareError(f"{source} sent more than {SIZE:,} bytes: it is not Tiny Shakespeare")
            digest.update(chunk)
            f.write(chunk)
        if digest.hexdigest() != SHA256:
            raise PrepareError(f"{source} is not Tiny Shakespeare (sha256 {digest.hexdigest()[:12]}…, "
                               f"expected {SHA256[:12]}…): incomplete or wrong file")

    write_atomically(path, write)


def build_vocab(text):
    """The sorted unique characters, and the maps between characters and ids."""
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    return {"vocab_size": len(chars), "stoi": stoi, "itos": itos}


def split(sequence):
    """The training and the validation part of a text, or of its token ids: 90% / 10%."""
    n_train = int(TRAIN_FRACTION * len(sequence))
    return sequence[:n_train], sequence[n_train:]


def prepare(out_dir=HERE, input_path=None, url=URL, download=False, deadline=DEADLINE):
    """Write input.txt (copied from input_path, or downloaded when download is true or the one in
    out_dir is missing or wrong), then train.bin, val.bin and meta.pkl to out_dir. Returns the vocabulary."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise PrepareError(f"--out_dir {out_dir} is a file, not a folder")
    os.makedirs(out_dir, exist_ok=True)
    text_path = os.path.join(out_dir, "input.txt")
    if input_path:
        if not os.path.isfile(input_path):
            raise PrepareError(f"--input {input_path}: no such file")
        save_text(text_path, file_chunks(input_path), input_path)
    elif download or not is_tiny_shakespeare(text_path):
        print(f"downloading {url}", flush=True)
        save_text(text_path, download_chunks(url, deadline=deadline), url)
    with open(text_path, encoding="utf-8") as f:
        text = f.read()
    meta = build_vocab(text)
    ids = np.array([meta["stoi"][c] for c in text], dtype=np.uint16)  # (N,)
    train, val = split(ids)
    write_atomically(os.path.join(out_dir, "train.bin"), lambda f: f.write(train.tobytes()))
    write_atomically(os.path.join(out_dir, "val.bin"), lambda f: f.write(val.tobytes()))
    write_atomically(os.path.join(out_dir, "meta.pkl"), lambda f: pickle.dump(meta, f))
    return meta


def ensure_prepared(out_dir=HERE):
    """Prepare out_dir unless train.bin, val.bin and meta.pkl are all there, saying so in one line.
    For every script that needs the data: train.py calls it for its default data folder."""
    missing = [name for name in FILES if not os.path.isfile(os.path.join(out_dir, name))]
    if missing:
        print(f"{out_dir} has no {', '.join(missing)}: preparing it (python data/shakespeare_char/prepare.py)",
              flush=True)
        prepare(out_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", help="copy this local input.txt instead")
    source.add_argument("--download", action="store_true", help="download input.txt even when a valid one is here")
    parser.add_argument("--url", default=URL, help="where to download input.txt from (default: %(default)s)")
    parser.add_argument("--out_dir", default=HERE, help="where to write the files (default: next to this script)")
    args = parser.parse_args(argv)
    try:
        meta = prepare(args.out_dir, args.input, args.url, args.download)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a read-only folder, a full disk: write_atomically has left nothing behind
        print(f"error: cannot prepare {args.out_dir}: {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; no file was left half-written", file=sys.stderr)
        return 130
    n_train, n_val = (os.path.getsize(os.path.join(args.out_dir, f"{s}.bin")) // 2 for s in ("train", "val"))
    print(f"{n_train + n_val:,} characters, {meta['vocab_size']} symbols: "
          f"{repr(''.join(meta['itos'][i] for i in range(meta['vocab_size'])))}")
    print(f"{n_train:,} train tokens, {n_val:,} val tokens, written to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
