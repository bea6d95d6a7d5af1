"""
Prepare Tiny Shakespeare for character-level language modelling.

    python data/shakespeare_char/prepare.py                 # download input.txt
    python data/shakespeare_char/prepare.py --input FILE    # or copy a local copy

Writes, next to this file:
    input.txt   the text (1,115,394 characters), checked against its sha256
    train.bin   the first 90% as uint16 token ids
    val.bin     the last 10%
    meta.pkl    {'vocab_size': 65, 'stoi': {char: id}, 'itos': {id: char}}  (nanoGPT's format)
"""
import argparse
import hashlib
import os
import pickle
import shutil
import sys

import numpy as np
import requests

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
HERE = os.path.dirname(os.path.abspath(__file__))


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def download(url, dest, timeout=30):
    """Fetch url into dest (a temporary name); raise SystemExit with one line on any failure."""
    try:
        response = requests.get(url, timeout=timeout)
        response.raise_for_status()
        data = response.content
    except requests.RequestException as e:
        raise SystemExit(f"error: could not download {url}: {e}")
    with open(dest, "wb") as f:
        f.write(data)


def fetch_input(out_path, input_path=None, url=URL):
    """Put a verified copy of Tiny Shakespeare at out_path; keep an existing valid one."""
    if os.path.exists(out_path) and sha256_of(out_path) == SHA256:
        return
    source = input_path or url
    if input_path and not os.path.isfile(input_path):
        raise SystemExit(f"error: --input {input_path}: no such file")
    tmp = out_path + ".tmp"
    try:
        if input_path:
            shutil.copyfile(input_path, tmp)
        else:
            print(f"downloading {url}")
            download(url, tmp)
        digest = sha256_of(tmp)
        if digest != SHA256:
            raise SystemExit(f"error: {source} is not Tiny Shakespeare "
                             f"(sha256 {digest[:12]}…, expected {SHA256[:12]}…): incomplete or wrong file")
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_atomically(path, write):
    """Call write(file) on a temporary name, then rename it into place."""
    with open(path + ".tmp", "wb") as f:
        write(f)
    os.replace(path + ".tmp", path)


def build_vocab(text):
    """The sorted unique characters, and the maps between characters and ids."""
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    return {"vocab_size": len(chars), "stoi": stoi, "itos": itos}


def prepare(out_dir=HERE, input_path=None, url=URL):
    os.makedirs(out_dir, exist_ok=True)
    text_path = os.path.join(out_dir, "input.txt")
    fetch_input(text_path, input_path, url)
    with open(text_path, encoding="utf-8") as f:
        text = f.read()
    meta = build_vocab(text)
    ids = np.array([meta["stoi"][c] for c in text], dtype=np.uint16)  # (N,)
    n_train = int(0.9 * len(ids))
    write_atomically(os.path.join(out_dir, "train.bin"), ids[:n_train].tofile)
    write_atomically(os.path.join(out_dir, "val.bin"), ids[n_train:].tofile)
    write_atomically(os.path.join(out_dir, "meta.pkl"), lambda f: pickle.dump(meta, f))
    print(f"{len(text):,} characters, {meta['vocab_size']} symbols: "
          f"{repr(''.join(meta['itos'][i] for i in range(meta['vocab_size'])))}")
    print(f"{n_train:,} train tokens, {len(ids) - n_train:,} val tokens, written to {out_dir}")
    return meta


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", help="copy this local input.txt instead of downloading")
    parser.add_argument("--url", default=URL, help="where to download input.txt from (default: %(default)s)")
    parser.add_argument("--out_dir", default=HERE, help="where to write the files (default: next to this script)")
    args = parser.parse_args(argv)
    prepare(args.out_dir, args.input, args.url)


if __name__ == "__main__":
    sys.exit(main())
