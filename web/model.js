// A minimal GPT: model.py's forward pass written out over flat arrays of numbers, so that it runs
// in any browser and in Node with nothing to install.
//
//     tokens (T) -> embeddings (T, C) -> n_layer x Block -> LayerNorm -> logits (T, V)
//
// One sequence at a time (model.py's batch B is 1 here). T: new positions, C: n_embd channels,
// V: vocab_size, H: n_head, D = C / H. A (rows, cols) matrix is a Float32Array in row-major order,
// as PyTorch stores it. The names are model.py's, so that the two files read side by side.

// ---------------------------------------------------------------------------------- the weights

// The weights and vocabulary of web/model.bin (written by web/export.py) from its bytes, an
// ArrayBuffer: the page fetches the file, Node reads it.
export function load_model(buffer) {
  const length = new DataView(buffer).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
  const halves = new Uint16Array(buffer, 4 + length);
  const weights = {};
  for (const { name, shape, offset } of header.tensors) {
    const size = shape.reduce((a, b) => a * b, 1);
    weights[name] = float16_to_float32(halves.subarray(offset, offset + size));
  }
  weights["lm_head.weight"] = weights["transformer.wte.weight"]; // weight tying, as in model.py
  const stoi = Object.fromEntries(header.itos.map((c, i) => [c, i]));
  return { model: new GPT(header.config, weights), itos: header.itos, stoi };
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

// y = x W^T + b: x (T, n_in), W (n_out, n_in), b (n_out) -> (T, n_out), as nn.Linear.
function linear(x, T, W, b, n_in, n_out) {
  const y = new Float32Array(T * n_out);
  for (let t = 0; t < T; t++) {
    const row = t * n_in;
    for (let o = 0; o < n_out; o++) {
      const w = o * n_in;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0, i = 0; // four sums: fewer dependent additions
      for (; i + 3 < n_in; i += 4) {
        s0 += W[w + i] * x[row + i]; s1 += W[w + i + 1] * x[row + i + 1];
        s2 += W[w + i + 2] * x[row + i + 2]; s3 += W[w + i + 3] * x[row + i + 3];
      }
      for (; i < n_in; i++) s0 += W[w + i] * x[row + i];
      y[t * n_out + o] = s0 + s1 + s2 + s3 + (b ? b[o] : 0);
    }
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
  constructor(config, weights) {
    this.config = config;
    this.w = weights;
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
      const up = linear(h, T, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"], C, 4 * C); // (T, 4C)
      for (let i = 0; i < up.length; i++) up[i] = gelu(up[i]);
      const m = linear(up, T, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"], 4 * C, C); // (T, C)
      for (let i = 0; i < x.length; i++) x[i] += m[i]; // x + mlp(ln_2(x))
    }
    own.advance(T);
    x = layer_norm(x, T, C, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"]);
    return linear(x, T, w["lm_head.weight"], null, C, V); // (T, C) -> (T, V)
  }

  // Causal self-attention of T new positions against the cache: softmax(q k^T / sqrt(D)) v, head
  // by head; new token i sees the positions up to start + i. x (T, C) -> (T, C)
  attention(x, T, cache, layer, p, H) {
    const C = this.config.n_embd, D = C / H, start = cache.length, w = this.w;
    const qkv = linear(x, T, w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"], C, 3 * C); // (T, 3C): q, k, v
    const q = new Float32Array(T * C), k = new Float32Array(T * C), v = new Float32Array(T * C);
    for (let t = 0; t < T; t++) {
      q.set(qkv.subarray(t * 3 * C, t * 3 * C + C), t * C);
      k.set(qkv.subarray(t * 3 * C + C, t * 3 * C + 2 * C), t * C);
      v.set(qkv.subarray(t * 3 * C + 2 * C, t * 3 * C + 3 * C), t * C);
    }
    cache.append(layer, k, v, T);
    const base = layer * cache.block_size * C, keys = cache.k, values = cache.v;
    const y = new Float32Array(T * C), scores = new Float64Array(start + T), scale = 1 / Math.sqrt(D);
    for (let t = 0; t < T; t++) {
      const S = start + t + 1; // positions this token sees
      for (let h = 0; h < H; h++) {
        const qo = t * C + h * D;
        let max = -Infinity;
        for (let s = 0; s < S; s++) { // q . k for every visible position
          const ko = base + s * C + h * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qo + d] * keys[ko + d];
          scores[s] = dot * scale;
          if (scores[s] > max) max = scores[s];
        }
        let sum = 0;
        for (let s = 0; s < S; s++) { scores[s] = Math.exp(scores[s] - max); sum += scores[s]; }
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let s = 0; s < S; s++) acc += scores[s] * values[base + s * C + h * D + d];
          y[qo + d] = acc / sum;
        }
      }
    }
    return linear(y, T, w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"], C, C);
  }
}
