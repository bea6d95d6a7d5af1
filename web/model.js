// A minimal GPT: model.py's forward pass written out over flat arrays of numbers, so that it runs
// in any browser and in Node with nothing to install.
//
//     tokens (T) -> embeddings (T, C) -> n_layer x Block -> LayerNorm -> logits (T, V)
//
// One sequence at a time (model.py's batch B is 1 here). T: new positions, C: n_embd channels,
// V: vocab_size, H: n_head, D = C / H. A (rows, cols) matrix is a Float32Array in row-major order,
// as PyTorch stores it. The names are model.py's, so that the two files read side by side.

import { instantiate } from "./simd.js";

// ---------------------------------------------------------------------------------- the weights

// The weights and vocabulary of web/model.bin (written by web/export.py) from its bytes, an
// ArrayBuffer: the page fetches the file, Node reads it. The weights go into the memory of
// simd.js's WebAssembly function, where the engine has one and `simd` is true, so that it can read them.
export function load_model(buffer, simd = true) {
  const length = new DataView(buffer).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
  const halves = new Uint16Array(buffer, 4 + length);
  const { block_size, n_embd: C } = header.config;
  const sizes = header.tensors.map(({ shape }) => shape.reduce((a, b) => a * b, 1));
  const heap = new Heap(sizes.reduce((a, n) => a + n + 4, 0) + 4 * C + 2 * block_size * 4 * C, simd);
  const weights = {};
  header.tensors.forEach(({ name, offset }, i) => {
    weights[name] = heap.take(sizes[i]);
    weights[name].set(float16_to_float32(halves.subarray(offset, offset + sizes[i])));
  });
  weights["lm_head.weight"] = weights["transformer.wte.weight"]; // weight tying, as in model.py
  const stoi = Object.fromEntries(header.itos.map((c, i) => [c, i]));
  return { model: new GPT(header.config, weights, heap), itos: header.itos, stoi };
}

// Float32Arrays carved out of one WebAssembly.Memory, 16-byte aligned, and simd.js's linear() over
// it (null without WebAssembly SIMD: plain arrays then, and the JavaScript loop).
class Heap {
  constructor(floats, simd) {
    this.memory = new WebAssembly.Memory({ initial: Math.ceil((floats + 4) * 4 / 65536) });
    this.simd = simd ? instantiate(this.memory) : null;
    this.used = 0;
  }

  take(n) {
    if (!this.simd) return new Float32Array(n);
    const array = new Float32Array(this.memory.buffer, this.used * 4, n);
    this.used += Math.ceil(n / 4) * 4;
    return array;
  }
}

// IEEE 754 half precision (1 sign bit, 5 exponent bits, 10 fraction bits) -> float32.
function float16_to_float32(halves) {
  const out = new Float32Array(halves.length);
  for (let i = 0; i < halves.length; i++) {
    const h = halves[i], sign = h & 0x8000 ? -1 : 1, exponent = (h >> 10) & 0x1f, fraction = h & 0x3ff;
    out[i] = exponent === 0 ? sign * fraction * 2 ** -24 // subnormal
      : exponent === 31 ? (fraction ? NaN : sign * Infinity)
      : sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
  }
  return out;
}

// ---------------------------------------------------------------------------------- the layers

// y = x W^T + b: x (T, n_in), W (n_out, n_in), b (n_out) -> (T, n_out), as nn.Linear. Four rows of W
// at a time, two columns per pass: each number of x read serves four products (the fastest of
// the plain loops tried here, 1.6 times one row at a time).
function linear(x, T, W, b, n_in, n_out) {
  const y = new Float32Array(T * n_out);
  for (let t = 0; t < T; t++) {
    const r = t * n_in, out = t * n_out;
    let o = 0;
    for (; o + 3 < n_out; o += 4) {
      const w0 = o * n_in, w1 = w0 + n_in, w2 = w1 + n_in, w3 = w2 + n_in;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0, c0 = 0, c1 = 0, c2 = 0, c3 = 0, i = 0;
      for (; i + 1 < n_in; i += 2) {
        const x0 = x[r + i], x1 = x[r + i + 1];
        a0 += W[w0 + i] * x0; a1 += W[w1 + i] * x0; a2 += W[w2 + i] * x0; a3 += W[w3 + i] * x0;
        c0 += W[w0 + i + 1] * x1; c1 += W[w1 + i + 1] * x1; c2 += W[w2 + i + 1] * x1; c3 += W[w3 + i + 1] * x1;
      }
      for (; i < n_in; i++) {
        a0 += W[w0 + i] * x[r + i]; a1 += W[w1 + i] * x[r + i]; a2 += W[w2 + i] * x[r + i]; a3 += W[w3 + i] * x[r + i];
      }
      y[out + o] = a0 + c0; y[out + o + 1] = a1 + c1; y[out + o + 2] = a2 + c2; y[out + o + 3] = a3 + c3;
    }
    for (; o < n_out; o++) { // the rows left over
      let a = 0;
      for (let i = 0; i < n_in; i++) a += W[o * n_in + i] * x[r + i];
      y[out + o] = a;
    }
    if (b) for (let j = 0; j < n_out; j++) y[out + j] += b[j];
  }
  return y;
}

// (x - mean) / sqrt(var + 1e-5) * weight + bias over the C channels of each of T rows, as nn.LayerNorm.
function layer_norm(x, T, C, weight, bias) {
  const y = new Float32Array(T * C);
  for (let t = 0; t < T; t++) {
    let mean = 0, variance = 0;
    for (let c = 0; c < C; c++) mean += x[t * C + c];
    mean /= C;
    for (let c = 0; c < C; c++) variance += (x[t * C + c] - mean) ** 2;
    const scale = 1 / Math.sqrt(variance / C + 1e-5);
    for (let c = 0; c < C; c++) y[t * C + c] = (x[t * C + c] - mean) * scale * weight[c] + (bias ? bias[c] : 0);
  }
  return y;
}

// erf(x) = 1 - erfc(x), erfc by Chebyshev fitting to a fractional error below 1.2e-7 (Numerical
// Recipes, erfcc): JavaScript has no Math.erf, and F.gelu is the exact, erf-based GELU.
function erf(x) {
  const z = Math.abs(x), t = 1 / (1 + 0.5 * z);
  const erfc = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
    + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return x >= 0 ? 1 - erfc : erfc - 1;
}

const gelu = (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)); // x * Phi(x)

// ---------------------------------------------------------------------------------- the cache

// The keys and values every layer has computed so far, as model.KVCache: k, v (n_layer, block_size, C),
// filled up to `length` positions (the same in every layer). The model appends each layer's new
// positions, then advance()s; a decoder may reset() it.
export class KVCache {
  constructor(config) {
    this.C = config.n_embd;
    this.block_size = config.block_size;
    const size = config.n_layer * config.block_size * config.n_embd;
    this.k = new Float32Array(size);
    this.v = new Float32Array(size);
    this.length = 0;
  }

  // Store k, v (T, C) of `layer` after the filled positions.
  append(layer, k, v, T) {
    const at = (layer * this.block_size + this.length) * this.C;
    this.k.set(k.subarray(0, T * this.C), at);
    this.v.set(v.subarray(0, T * this.C), at);
  }

  advance(n) { this.length += n; }

  reset() { this.length = 0; }
}

// ---------------------------------------------------------------------------------- the model

export class GPT {
  constructor(config, weights, heap = null) {
    this.config = config;
    this.w = weights;
    if (heap && heap.simd) { // room in the heap for linear()'s input and output, and a bias of zeros
      const rows = config.block_size, widest = 4 * config.n_embd;
      this.heap = { simd: heap.simd, zeros: heap.take(widest), x: heap.take(rows * widest), y: heap.take(rows * widest) };
    }
  }

  // linear() of the layers: WebAssembly SIMD on weights in its memory, else the JavaScript loop.
  linear(x, T, W, b, n_in, n_out) {
    const h = this.heap;
    if (!h || n_in % 4 || W.buffer !== h.x.buffer) return linear(x, T, W, b, n_in, n_out);
    h.x.set(x.subarray(0, T * n_in));
    for (let t = 0; t < T; t++) {
      h.simd.linear(h.x.byteOffset + t * n_in * 4, W.byteOffset, (b || h.zeros).byteOffset,
        h.y.byteOffset + t * n_out * 4, n_in, n_out);
    }
    return h.y.slice(0, T * n_out);
  }

  new_cache() { return new KVCache(this.config); }

  // idx: the ids of T new tokens -> logits (T, V) at every new position. With a KVCache they take
  // the positions after the cached ones, attend to them, and are appended to the cache; without
  // one, idx is the whole context.
  forward(idx, cache = null) {
    const { n_layer, n_head, n_embd: C, vocab_size: V, block_size } = this.config;
    const T = idx.length, start = cache ? cache.length : 0, w = this.w;
    if (start + T > block_size) throw new Error(`${start + T} positions, block_size is ${block_size}`);
    let x = new Float32Array(T * C); // token embedding + position embedding: (T, C)
    for (let t = 0; t < T; t++) {
      for (let c = 0; c < C; c++) {
        x[t * C + c] = w["transformer.wte.weight"][idx[t] * C + c] + w["transformer.wpe.weight"][(start + t) * C + c];
      }
    }
    const own = cache || new KVCache(this.config); // without a cache: one that lives for this call
    for (let layer = 0; layer < n_layer; layer++) {
      const p = `transformer.h.${layer}.`;
      const a = this.attention(layer_norm(x, T, C, w[p + "ln_1.weight"], w[p + "ln_1.bias"]), T, own, layer, p, n_head);
      for (let i = 0; i < x.length; i++) x[i] += a[i]; // x + attn(ln_1(x))
      const h = layer_norm(x, T, C, w[p + "ln_2.weight"], w[p + "ln_2.bias"]);
      const up = this.linear(h, T, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"], C, 4 * C); // (T, 4C)
      for (let i = 0; i < up.length; i++) up[i] = gelu(up[i]);
      const m = this.linear(up, T, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"], 4 * C, C); // (T, C)
      for (let i = 0; i < x.length; i++) x[i] += m[i]; // x + mlp(ln_2(x))
    }
    own.advance(T);
    x = layer_norm(x, T, C, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"]);
    return this.linear(x, T, w["lm_head.weight"], null, C, V); // (T, C) -> (T, V)
  }

  // Causal self-attention of T new positions against the cache: softmax(q k^T / sqrt(D)) v, head
  // by head; new token i sees the positions up to start + i. x (T, C) -> (T, C)
  attention(x, T, cache, layer, p, H) {
    const C = this.config.n_embd, D = C / H, start = cache.length, w = this.w;
    const qkv = this.linear(x, T, w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"], C, 3 * C); // (T, 3C): q, k, v
    const q = new Float32Array(T * C), k = new Float32Array(T * C), v = new Float32Array(T * C);
    for (let t = 0; t < T; t++) {
      q.set(qkv.subarray(t * 3 * C, t * 3 * C + C), t * C);
      k.set(qkv.subarray(t * 3 * C + C, t * 3 * C + 2 * C), t * C);
      v.set(qkv.subarray(t * 3 * C + 2 * C, t * 3 * C + 3 * C), t * C);
    }
    cache.append(layer, k, v, T);
    const base = layer * cache.block_size * C, keys = cache.k, values = cache.v;
    const y = new Float32Array(T * C), scores = new Float64Array(start + T), out = new Float64Array(D);
    const scale = 1 / Math.sqrt(D);
    for (let t = 0; t < T; t++) {
      const S = start + t + 1; // positions this token sees
      for (let h = 0; h < H; h++) {
        const qo = t * C + h * D;
        let max = -Infinity;
        for (let s = 0; s < S; s++) { // q . k for every visible position
          const ko = base + s * C + h * D;
          let d0 = 0, d1 = 0, d2 = 0, d3 = 0, d = 0;
          for (; d + 3 < D; d += 4) { // four sums
            d0 += q[qo + d] * keys[ko + d]; d1 += q[qo + d + 1] * keys[ko + d + 1];
            d2 += q[qo + d + 2] * keys[ko + d + 2]; d3 += q[qo + d + 3] * keys[ko + d + 3];
          }
          for (; d < D; d++) d0 += q[qo + d] * keys[ko + d];
          scores[s] = (d0 + d1 + d2 + d3) * scale;
          if (scores[s] > max) max = scores[s];
        }
        let sum = 0;
        out.fill(0);
        for (let s = 0; s < S; s++) { // softmax(scores) . v, one position's values at a time
          const weight = Math.exp(scores[s] - max), vo = base + s * C + h * D;
          sum += weight;
          let d = 0;
          for (; d + 3 < D; d += 4) {
            out[d] += weight * values[vo + d]; out[d + 1] += weight * values[vo + d + 1];
            out[d + 2] += weight * values[vo + d + 2]; out[d + 3] += weight * values[vo + d + 3];
          }
          for (; d < D; d++) out[d] += weight * values[vo + d];
        }
        for (let d = 0; d < D; d++) y[qo + d] = out[d] / sum;
      }
    }
    return this.linear(y, T, w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"], C, C);
  }
}
