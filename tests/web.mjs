// The JavaScript side of tests/test_web.py: reads a JSON list of calls on stdin, runs each on
// web/sampling.js and web/model.js, and prints the list of results as JSON. -Infinity travels as
// null (JSON has no infinities).
import fs from "fs";
import path from "path";
import { fileURLToPath } from "url";

import { load_model } from "../web/model.js";
import * as sampling from "../web/sampling.js";

const WEB = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "web");
const bytes = fs.readFileSync(path.join(WEB, "model.bin"));
const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
const { model, stoi } = load_model(buffer);
const plain = load_model(buffer, false).model; // model.js's JavaScript loop instead of WebAssembly SIMD

const decode = (values) => Float64Array.from(values, (x) => (x === null ? -Infinity : x));
const encode = (values) => Array.from(values, (x) => (x === -Infinity ? null : x));
const ids = (text) => [...text].map((c) => stoi[c]);

const CALLS = {
  // one stage on one row of logits: {fn, logits, args}; a generator's seed where the stage draws
  stage: ({ fn, logits, args = [], seed }) => {
    const extra = seed === undefined ? [] : [new sampling.Generator().manual_seed(seed)];
    const more = fn === "dry_penalty" ? [args[0], args[1], args[2], args[3], new Set(args[4]), args[5]] : args;
    return encode(sampling[fn](decode(logits), ...more, ...extra));
  },
  // the numbers torch.rand gives for a seed
  rand: ({ seed, n }) => { const g = new sampling.Generator().manual_seed(seed); return Array.from({ length: n }, () => g.rand()); },
  // n draws from probs with one generator
  draws: ({ probs, seed, n }) => {
    const g = new sampling.Generator().manual_seed(seed);
    return Array.from({ length: n }, () => sampling.categorical(probs, g));
  },
  // the logits after `text`, uncached (the last block_size characters), as next_logits
  logits: ({ text, simd = true }) => encode(sampling.next_logits(simd ? model : plain, ids(text))),
  // every step of the decode loop: the raw logits and the chosen id
  stream: ({ text, n, settings = {}, seed = 0 }) => {
    const steps = [], raw = [];
    const observe = (name, value) => { if (name === "logits") raw.push(encode(value)); };
    const g = new sampling.Generator().manual_seed(seed);
    for (const step of sampling.stream(model, ids(text), n, new sampling.Decoding(settings), g, stoi, observe)) steps.push(step.id);
    return { ids: steps, logits: raw };
  },
  // the processed logits after every stage of the pipeline, for a context of ids
  pipeline: ({ logits, context, prompt_length, settings, seed = 0 }) => {
    const decoding = new sampling.Decoding(settings), run = decoding.start(context.slice(0, prompt_length),
      new sampling.Generator().manual_seed(seed));
    run.ids = context.slice();
    return encode(sampling.process(decode(logits), run, decoding.stages(stoi)));
  },
  // a conflict's message, or null
  conflicts: ({ settings }) => { try { new sampling.Decoding(settings); return null; } catch (e) { return e.message; } },
};

const calls = JSON.parse(fs.readFileSync(0, "utf8"));
console.log(JSON.stringify(calls.map((call) => CALLS[call.call](call))));
