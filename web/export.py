"""
Write what the web page needs, from the Python it mirrors:

    python web/export.py        # -> web/model.bin and web/lesson.json

model.bin   the shipped model for model.js: a JSON header (the model's shape, the vocabulary, where
            each tensor lies) and every weight as a little-endian float16, 5.4 MB instead of the
            checkpoint's 10.9 MB. Rounding the weights to float16 moves the logits by about 0.01.
lesson.json the settings of sampling.Decoding (name, default, help, allowed values, and the range
            of the page's slider), the five lessons of sample.py --walkthrough and the words it
            prints around the numbers, in English and in Chinese (--lang zh).

Layout of model.bin: 4 bytes, the header's length n (uint32, little-endian); n bytes of UTF-8 JSON
{"config": model_args, "itos": [65 characters], "tensors": [{"name", "shape", "offset"}]}, padded
with spaces to a multiple of 4; then the tensors, float16, offsets counted in numbers from the
end of the header. The output depends only on the checkpoint: the same checkpoint, the same bytes.
"""
import argparse
import json
import os
import struct
import sys
from dataclasses import fields

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import checkpoint  # noqa: E402
import sample  # noqa: E402  (the lessons and their words)
import sampling  # noqa: E402
from files import write_atomically  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# The page's sliders: (low, high, step) inside the values Decoding allows; a setting that is off by
# default (None) is off at the slider's low end. The text settings (logit_bias, dry_sequence_breakers,
# stop) are text boxes, order a menu.
SLIDERS = {
    "repetition_penalty": (0.5, 3.0, 0.05), "frequency_penalty": (-2.0, 2.0, 0.1),
    "presence_penalty": (-2.0, 2.0, 0.1), "penalty_last_n": (0, 256, 1),
    "dry_multiplier": (0.0, 3.0, 0.1), "dry_base": (1.0, 4.0, 0.05), "dry_allowed_length": (0, 10, 1),
    "dry_penalty_last_n": (0, 256, 1), "no_repeat_ngram_size": (0, 10, 1),
    "temperature": (0.0, 3.0, 0.05), "dynatemp_range": (0.0, 2.0, 0.1), "dynatemp_exponent": (0.0, 4.0, 0.1),
    "top_k": (0, 65, 1), "top_p": (0.05, 1.0, 0.05), "min_p": (0.0, 1.0, 0.02), "typical_p": (0.05, 1.0, 0.05),
    "epsilon_cutoff": (0.0, 0.5, 0.01), "eta_cutoff": (0.0, 0.5, 0.01), "top_n_sigma": (0.0, 4.0, 0.1),
    "xtc_threshold": (0.0, 0.5, 0.01), "xtc_probability": (0.0, 1.0, 0.05), "mirostat": (0, 2, 2),
    "mirostat_tau": (0.5, 10.0, 0.1), "mirostat_eta": (0.05, 1.0, 0.05),
}
# What only sample.py does: a pattern's mask needs partial regular-expression matching, guidance a
# second context for the model, contrastive search its hidden states, the watermark torch.randperm's
# permutations; the page mirrors the other stages.
NOT_ON_THE_PAGE = ("regex", "watermark", "watermark_gamma", "guidance_scale", "negative_prompt", "penalty_alpha")
# The low end that means "off" for a setting whose default is None: 0, except where 0 is a value.
OFF = {"top_p": 1.0, "typical_p": 1.0}


def header_and_weights(ckpt_path):
    """(header dict, float16 array of every weight in header order) for the checkpoint."""
    model, meta, ckpt = checkpoint.load(ckpt_path)
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied to transformer.wte
    tensors, arrays, offset = [], [], 0
    for name, tensor in state.items():
        array = tensor.detach().cpu().numpy().astype("<f2").ravel()
        tensors.append({"name": name, "shape": list(tensor.shape), "offset": offset})
        arrays.append(array)
        offset += array.size
    config = {k: ckpt["model_args"][k] for k in checkpoint.MODEL_ARGS}
    itos = [meta["itos"][i] for i in range(meta["vocab_size"])]
    return {"config": config, "itos": itos, "tensors": tensors}, np.concatenate(arrays)


def model_bytes(ckpt_path):
    """The bytes of model.bin."""
    header, weights = header_and_weights(ckpt_path)
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    return struct.pack("<I", len(text)) + text + weights.tobytes()


def decoding_settings():
    """Each field of sampling.Decoding as the page's controls need it."""
    settings = []
    for f in fields(sampling.Decoding):
        if f.name in NOT_ON_THE_PAGE:
            continue
        entry = {"name": f.name, "default": list(f.default) if isinstance(f.default, tuple) else f.default,
                 "help": f.metadata["help"], "rule": f.metadata["rule"]}
        if f.name in SLIDERS:
            low, high, step = SLIDERS[f.name]
            entry["slider"] = {"low": low, "high": high, "step": step, "off": OFF.get(f.name, low) if f.default is None else None}
        elif f.name == "order":
            entry["choices"] = list(sampling.ORDERS)
        settings.append(entry)
    return settings


def lesson():
    """The settings, the five lessons of the walkthrough (name and rule in both languages, and
    their non-default settings, as sample.py --walkthrough runs them) and its words."""
    lessons = [{"en": list(english), "zh": list(chinese), "settings": decoding.changed(),
                "flags": sample.describe(decoding) or "--temperature 1"}
               for english, chinese, decoding in sample.LESSON]
    return {"settings": decoding_settings(), "prompt": sample.ARTICLE_PROMPT, "lessons": lessons,
            "words": sample.WORDS, "seed": sample.build_parser().get_default("seed")}


def lesson_bytes():
    return (json.dumps(lesson(), ensure_ascii=False, indent=1) + "\n").encode()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=checkpoint.DEFAULT_CKPT, help="the checkpoint to export")
    parser.add_argument("--out_dir", default=HERE, help="where to write model.bin and lesson.json (default: web/)")
    args = parser.parse_args(argv)
    try:
        data = model_bytes(args.ckpt)
    except checkpoint.CheckpointError as e:
        sys.exit(f"error: {e}")
    for name, content in (("model.bin", data), ("lesson.json", lesson_bytes())):
        path = os.path.join(args.out_dir, name)
        write_atomically(path, lambda f, c=content: f.write(c))
        print(f"wrote {os.path.relpath(path)} ({len(content) / 1e6:.1f} MB)" if name == "model.bin" else f"wrote {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
