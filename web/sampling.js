// How a language model picks its next token: sampling.py's strategies, one small function each,
// with the same names (Python's snake_case, so that the two files read side by side), the same
// rules and the same order of the stages.
//
// Logits are one row, a Float64Array (V) (sampling.py works on (B, V) batches; the page decodes
// one text). A removed token gets -Infinity; no function edits its input. The settings, their
// defaults and the page's controls come from lesson.json, which web/export.py writes from
// sampling.Decoding: one list for the command line, the notebooks and the page.

import lesson from "./lesson.json" with { type: "json" };

const NEG_INF = -Infinity;

// ---------------------------------------------------------------------------------- choosing a token

// next = argmax_i logits_i; ties go to the lowest index.
export function greedy(logits) {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

// The logits with every token but the argmax at -inf: temperature 0 as a stage.
export function argmax_only(logits) {
  const best = greedy(logits);
  return logits.map((z, i) => (i === best ? z : NEG_INF));
}

// torch.Generator on the CPU, exactly: the Mersenne Twister MT19937, seeded as torch's
// manual_seed(seed) seeds it, and torch.rand()'s float32 from its next 32 bits: the low 24 bits
// times 2^-24. The same seed gives the same numbers as torch.rand, hence the same draws as
// sample.py --seed.
export class Generator {
  manual_seed(seed) {
    const mt = (this.mt = new Uint32Array(624));
    mt[0] = Number(BigInt(seed) & 0xffffffffn);
    for (let i = 1; i < 624; i++) mt[i] = Math.imul(1812433253, mt[i - 1] ^ (mt[i - 1] >>> 30)) + i;
    this.index = 624;
    return this;
  }

  next_uint32() {
    const mt = this.mt;
    if (this.index >= 624) {
      for (let k = 0; k < 624; k++) {
        const y = (mt[k] & 0x80000000) | (mt[(k + 1) % 624] & 0x7fffffff);
        mt[k] = mt[(k + 397) % 624] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      this.index = 0;
    }
    let y = mt[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  rand() { return (this.next_uint32() & 0xffffff) * 2 ** -24; } // in [0, 1)
}

// One number drawn uniformly from [0, 1): torch.rand(1, generator=generator).
export const uniform = (generator) => generator.rand();

// p_i = exp(z_i) / sum_j exp(z_j), a removed token 0.
export function softmax(logits) {
  const max = Math.max(...logits);
  const e = logits.map((z) => Math.exp(z - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / sum);
}

// One draw from the distribution probs (V) (scaled by its sum), by inverting its cumulative
// distribution F(i) = p_0 + ... + p_i:  u ~ Uniform[0, 1),  next = the first i with F(i) > u F(V - 1),
// in float32 as sampling.categorical computes it. A token of probability 0 never comes out.
export function categorical(probs, generator) {
  const cdf = new Float32Array(probs.length);
  let total = 0;
  for (let i = 0; i < probs.length; i++) cdf[i] = total = Math.fround(total + Math.fround(probs[i]));
  const u = Math.fround(Math.fround(uniform(generator)) * total);
  let i = 0;
  while (i < cdf.length - 1 && !(cdf[i] > u)) i++;
  return i;
}

// next ~ Categorical(softmax(logits)): one draw (categorical()).
export const sample = (logits, generator) => categorical(softmax(logits), generator);

// ---------------------------------------------------------------------------------- warpers

// p_i = exp(z_i / tau) / sum_j exp(z_j / tau): divides the logits, not the probabilities.
export function apply_temperature(logits, temperature) {
  if (!(temperature > 0)) throw new RangeError(`temperature must be > 0, got ${temperature}`);
  return logits.map((z) => z / temperature);
}

// H = -sum_i p_i ln p_i of softmax(logits), in nats; a removed token adds 0.
export function entropy(logits) {
  const p = softmax(logits);
  let h = 0;
  for (const x of p) if (x > 0) h -= x * Math.log(x);
  return h;
}

// tau = tau_min + (tau_max - tau_min) (H / H_max)^exponent over the finite logits (llama.cpp).
export function dynamic_temperature(logits, temperature, delta, exponent = 1) {
  const count = logits.filter(Number.isFinite).length;
  if (count < 2) return logits.slice();
  const low = Math.max(0, temperature - delta), high = temperature + delta;
  const tau = low + (high - low) * Math.max(0, entropy(logits) / Math.log(count)) ** exponent;
  return tau > 0 ? logits.map((z) => z / tau) : argmax_only(logits);
}

// The value of the n-th largest logit (ties counted): what sampling.py reads off torch.topk.
function nth_largest(values, n) {
  return Float64Array.from(values).sort().reverse()[Math.min(n, values.length) - 1];
}

// Keep the tokens whose logit is >= the k-th largest; ties at the k-th value are all kept.
export function top_k_filter(logits, k) {
  if (!(k >= 1)) throw new RangeError(`top_k must be >= 1, got ${k}`);
  const kth = nth_largest(logits, k);
  return logits.map((z) => (z < kth ? NEG_INF : z));
}

// Token ids ordered by value, ascending, ties by id (a stable sort).
const ascending = (values) => Array.from(values.keys()).sort((a, b) => values[a] - values[b] || a - b);

// Nucleus: the smallest set of most likely tokens whose mass is >= p, the one that crosses p
// included. From the other end: a token goes when it and every less likely one hold <= 1 - p.
export function top_p_filter(logits, p, min_tokens_to_keep = 1) {
  if (!(p > 0 && p <= 1)) throw new RangeError(`top_p must be in (0, 1], got ${p}`);
  const order = ascending(logits), probs = softmax(order.map((i) => logits[i]));
  const out = logits.slice();
  let tail = 0;
  order.forEach((id, rank) => {
    tail = Math.fround(tail + Math.fround(probs[rank])); // float32, as torch's cumsum
    if (tail <= Math.fround(1 - p) && rank < order.length - min_tokens_to_keep) out[id] = NEG_INF;
  });
  return out;
}

// remove (V) less every token whose value is at least the n-th largest: min_tokens_to_keep.
function keep_at_least(remove, values, n) {
  const nth = nth_largest(values, n);
  return remove.map((r, i) => r && values[i] < nth);
}

function removing(logits, remove) {
  return logits.map((z, i) => (remove[i] ? NEG_INF : z));
}

// Keep token i when p_i >= min_p * max_j p_j.
export function min_p_filter(logits, min_p, min_tokens_to_keep = 1) {
  if (!(min_p >= 0 && min_p <= 1)) throw new RangeError(`min_p must be in [0, 1], got ${min_p}`);
  const probs = softmax(logits), bar = min_p * Math.max(...probs);
  return removing(logits, keep_at_least(probs.map((x) => x < bar), probs, min_tokens_to_keep));
}

// Locally typical: rank tokens by |-log p_i - H| and keep the closest until their mass reaches `mass`.
export function typical_filter(logits, mass, min_tokens_to_keep = 1) {
  if (!(mass > 0 && mass <= 1)) throw new RangeError(`typical_p must be in (0, 1], got ${mass}`);
  if (mass === 1) return logits.slice();
  const probs = softmax(logits), h = entropy(logits);
  const distance = probs.map((x) => Math.abs(-Math.log(x) - h));
  const order = ascending(distance);
  let cumulative = 0, last = 0;
  for (const id of order) { // how many of the most typical tokens hold less than `mass`
    cumulative = Math.fround(cumulative + Math.fround(probs[id]));
    if (cumulative < mass) last++;
  }
  const cut = distance[order[Math.min(last, order.length - 1)]];
  const remove = distance.map((d) => d > cut);
  order.slice(0, min_tokens_to_keep).forEach((id) => (remove[id] = false));
  return removing(logits, remove);
}

// Epsilon sampling: keep token i when p_i >= epsilon.
export function epsilon_filter(logits, epsilon, min_tokens_to_keep = 1) {
  if (!(epsilon > 0 && epsilon < 1)) throw new RangeError(`epsilon_cutoff must be in (0, 1), got ${epsilon}`);
  return removing(logits, keep_at_least(softmax(logits).map((x) => x < epsilon), logits, min_tokens_to_keep));
}

// Eta sampling: keep token i when p_i >= eta = min(epsilon, sqrt(epsilon) exp(-H)).
export function eta_filter(logits, epsilon, min_tokens_to_keep = 1) {
  if (!(epsilon > 0 && epsilon < 1)) throw new RangeError(`eta_cutoff must be in (0, 1), got ${epsilon}`);
  const eta = Math.min(epsilon, Math.sqrt(epsilon) * Math.exp(-entropy(logits)));
  return removing(logits, keep_at_least(softmax(logits).map((x) => x < eta), logits, min_tokens_to_keep));
}

// Top-n-sigma: keep z_i >= max z - n sigma, sigma the standard deviation of the finite logits.
export function top_n_sigma_filter(logits, n) {
  if (!(n > 0)) throw new RangeError(`top_n_sigma must be > 0, got ${n}`);
  const finite = logits.filter(Number.isFinite);
  const mean = finite.reduce((a, b) => a + b, 0) / finite.length;
  const sigma = Math.sqrt(finite.reduce((a, z) => a + (z - mean) ** 2, 0) / finite.length);
  const bar = Math.max(...logits) - n * sigma;
  return logits.map((z) => (z < bar ? NEG_INF : z));
}

// XTC: with probability `probability` (one uniform draw), when at least two tokens have
// p_i >= threshold, remove all of them but the least likely (ties: the highest id stays).
export function xtc_filter(logits, threshold, probability, generator) {
  const probs = softmax(logits), above = probs.map((x) => x >= threshold);
  const fires = uniform(generator) < probability && above.filter(Boolean).length >= 2;
  if (!fires) return logits.slice();
  let least = -1;
  probs.forEach((x, i) => { if (above[i] && (least < 0 || x <= probs[least])) least = i; });
  return logits.map((z, i) => (above[i] && i !== least ? NEG_INF : z));
}

// Mirostat 2's cut: keep the tokens of surprise -log2 p_i <= mu, and always the most likely.
export function mirostat_filter(logits, mu) {
  const probs = softmax(logits), best = greedy(logits);
  return logits.map((z, i) => (-Math.log2(probs[i]) > mu && i !== best ? NEG_INF : z));
}

// After the draw: mu <- mu - eta (surprise - tau), the surprise of the chosen token in bits.
export function mirostat_update(mu, logits, chosen, tau, eta) {
  return mu - eta * (-Math.log2(softmax(logits)[chosen]) - tau);
}

// ---------------------------------------------------------------------------------- penalties

// OpenAI's logit_bias: z_i + b_i (bias: a Float64Array (V), zero for the others).
export const logit_bias = (logits, bias) => logits.map((z, i) => z + bias[i]);

// Hugging Face's rule, for each distinct token in the context: z / theta if z > 0, else z * theta.
export function repetition_penalty(logits, context, penalty) {
  if (!(penalty > 0)) throw new RangeError(`repetition_penalty must be > 0, got ${penalty}`);
  const out = logits.slice();
  for (const i of new Set(context)) out[i] = logits[i] > 0 ? logits[i] / penalty : logits[i] * penalty;
  return out;
}

// How many times each id occurs in `generated`: (V).
export function token_counts(generated, vocab_size) {
  const counts = new Float64Array(vocab_size);
  for (const i of generated) counts[i]++;
  return counts;
}

// OpenAI: z_i - c_i alpha_frequency - [c_i > 0] alpha_presence, c counting generated tokens only.
export function frequency_presence_penalty(logits, counts, frequency, presence) {
  return logits.map((z, i) => z - counts[i] * frequency - (counts[i] > 0 ? presence : 0));
}

// Ban every token that would complete an n-gram already in the context (prompt included).
export function no_repeat_ngram(logits, context, n) {
  if (!(n >= 1)) throw new RangeError(`no_repeat_ngram_size must be >= 1, got ${n}`);
  const T = context.length, prefix = context.slice(T - (n - 1)), out = logits.slice();
  for (let start = 0; start + n <= T; start++) {
    if (prefix.every((id, j) => context[start + j] === id)) out[context[start + n - 1]] = NEG_INF;
  }
  return out;
}

// DRY: a token that would extend a repeat of n >= allowed_length tokens loses
// multiplier * base^(n - allowed_length); repeats never reach back past a breaker.
export function dry_penalty(logits, context, multiplier, base = 1.75, allowed_length = 2, breakers = new Set(), window = null) {
  const out = logits.slice();
  if (multiplier === 0) return out;
  const max_exponent = base > 1.000001 ? Math.trunc(88.7228391 / Math.log(base)) : null; // ln(float32 max)
  const ids = window ? context.slice(-window) : context, N = ids.length;
  if (N <= allowed_length) return out;
  let limit = 0; // tokens after the last breaker
  while (limit < N && !breakers.has(ids[N - 1 - limit])) limit++;
  if (limit < allowed_length) return out;
  const longest = new Map(); // token -> the longest repeat it would extend
  for (let j = 0; j < N - 1; j++) {
    let n = 0;
    while (n <= j && n < limit && ids[j - n] === ids[N - 1 - n]) n++;
    if (n >= allowed_length) longest.set(ids[j + 1], Math.max(longest.get(ids[j + 1]) || 0, n));
  }
  for (const [token, n] of longest) {
    if (breakers.has(token)) continue;
    const exponent = max_exponent === null ? n - allowed_length : Math.min(n - allowed_length, max_exponent);
    out[token] -= multiplier * base ** exponent;
  }
  return out;
}

// ---------------------------------------------------------------------------------- the settings

export const SETTINGS = lesson.settings; // each: name, default, help, rule, and the page's slider
export const DEFAULTS = Object.fromEntries(SETTINGS.map((s) => [s.name, s.default]));
export const ORDERS = ["hf", "llama.cpp"];
const PENALTIES = ["repetition", "frequency_presence", "dry", "no_repeat"];
export const HF_CHAIN = ["logit_bias", ...PENALTIES, "temperature", "top_k", "top_p", "min_p", "typical", "epsilon",
  "eta", "top_n_sigma", "xtc", "mirostat"];
export const LLAMA_CPP_CHAIN = ["logit_bias", ...PENALTIES, "top_n_sigma", "top_k", "typical", "top_p", "min_p",
  "epsilon", "eta", "xtc", "temperature"];
const TRUNCATIONS = ["top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_n_sigma"];

// A number as Python's f"{value:g}" writes it: 2.0 -> "2", 0.9 -> "0.9".
export const g = (value) => String(Number(value.toPrecision(6)));

// Every setting of a strategy (sampling.Decoding): the defaults, then `settings`. Combinations
// without a meaning throw a RangeError with Decoding's one-line message.
export class Decoding {
  constructor(settings = {}) {
    Object.assign(this, DEFAULTS, settings);
    const problem = this.conflicts()[0];
    if (problem) throw new RangeError(problem);
  }

  get is_greedy() { return this.temperature === 0; }

  get penalties_on() {
    return this.repetition_penalty !== 1 || this.frequency_penalty || this.presence_penalty || this.dry_multiplier
      || this.no_repeat_ngram_size;
  }

  conflicts() {
    const problems = [];
    if (this.dynatemp_range && this.is_greedy) problems.push("dynatemp_range needs a temperature > 0 (0 is greedy)");
    if (this.mirostat) {
      const cuts = TRUNCATIONS.filter((name) => this[name] !== null);
      if (this.xtc_probability) cuts.push("xtc_probability");
      if (this.dynatemp_range) cuts.push("dynatemp_range");
      if (cuts.length) problems.push(`mirostat chooses its own cut: drop ${cuts.join(", ")} (llama.cpp ignores them)`);
      if (this.is_greedy) problems.push("mirostat needs a temperature > 0 (0 is greedy)");
      if (this.order === "llama.cpp" && this.penalties_on) {
        problems.push("llama.cpp applies no penalties when mirostat is on: drop them, or use order hf");
      }
    }
    return problems;
  }

  // {name: value} of the settings that differ from their defaults.
  changed() {
    return Object.fromEntries(SETTINGS.map((s) => s.name).filter((name) => JSON.stringify(this[name]) !== JSON.stringify(DEFAULTS[name]))
      .map((name) => [name, this[name]]));
  }

  // The steps that change the logits, in order, as {name, apply(logits, run)}: sampling.Decoding.stages.
  stages(stoi) {
    const all = this.all_stages(stoi);
    let chain = this.order === "llama.cpp" ? LLAMA_CPP_CHAIN : HF_CHAIN;
    if (this.mirostat) chain = ["logit_bias", ...(this.order === "hf" ? PENALTIES : []), "temperature", "mirostat"];
    else if (this.is_greedy && this.order === "hf") chain = ["logit_bias", ...PENALTIES];
    return chain.filter((name) => all[name]).map((name) => all[name]);
  }

  all_stages(stoi) {
    const s = {}, d = this;
    if (d.logit_bias.length) {
      const bias = new Float64Array(Object.keys(stoi).length);
      for (const [char, value] of d.logit_bias) bias[stoi[char]] += value;
      const shown = d.logit_bias.map(([c, v]) => `${c === "\n" ? "\\n" : c}:${v >= 0 ? "+" : ""}${g(v)}`).join(",");
      s.logit_bias = { name: `logit bias ${shown}`, apply: (z) => logit_bias(z, bias) };
    }
    if (d.repetition_penalty !== 1) {
      s.repetition = { name: `repetition penalty ${g(d.repetition_penalty)}`,
        apply: (z, run) => repetition_penalty(z, run.window(d.penalty_last_n), d.repetition_penalty) };
    }
    if (d.frequency_penalty || d.presence_penalty) {
      s.frequency_presence = { name: `frequency ${g(d.frequency_penalty)} / presence ${g(d.presence_penalty)}`,
        apply: (z, run) => frequency_presence_penalty(z, token_counts(run.window(d.penalty_last_n, true), z.length),
          d.frequency_penalty, d.presence_penalty) };
    }
    if (d.dry_multiplier) {
      const breakers = new Set([...d.dry_sequence_breakers].filter((c) => c in stoi).map((c) => stoi[c]));
      s.dry = { name: `DRY ${g(d.dry_multiplier)} · ${g(d.dry_base)}^(n - ${d.dry_allowed_length})`,
        apply: (z, run) => dry_penalty(z, run.ids, d.dry_multiplier, d.dry_base, d.dry_allowed_length, breakers,
          d.dry_penalty_last_n) };
    }
    if (d.no_repeat_ngram_size) {
      s.no_repeat = { name: `no repeated ${d.no_repeat_ngram_size}-gram`,
        apply: (z, run) => no_repeat_ngram(z, run.ids, d.no_repeat_ngram_size) };
    }
    if (d.is_greedy && d.order === "llama.cpp") {
      s.temperature = { name: "temperature 0: the argmax only", apply: (z) => argmax_only(z) };
    } else if (d.dynatemp_range) {
      s.temperature = { name: `dynamic temperature ${g(d.temperature)} ± ${g(d.dynatemp_range)}`,
        apply: (z) => dynamic_temperature(z, d.temperature, d.dynatemp_range, d.dynatemp_exponent) };
    } else if (d.temperature !== 1) {
      s.temperature = { name: `temperature ${g(d.temperature)}`, apply: (z) => apply_temperature(z, d.temperature) };
    }
    for (const [name, value, label, filter] of [
      ["top_k", d.top_k, "top-k", top_k_filter], ["top_p", d.top_p, "top-p", top_p_filter],
      ["min_p", d.min_p, "min-p", min_p_filter], ["typical", d.typical_p, "typical", typical_filter],
      ["epsilon", d.epsilon_cutoff, "epsilon", epsilon_filter], ["eta", d.eta_cutoff, "eta", eta_filter],
      ["top_n_sigma", d.top_n_sigma, "top-n-sigma", top_n_sigma_filter],
    ]) {
      if (value !== null) s[name] = { name: `${label} ${g(value)}`, apply: (z) => filter(z, value) };
    }
    if (d.xtc_probability) {
      s.xtc = { name: `XTC ${g(d.xtc_threshold)} with probability ${g(d.xtc_probability)}`,
        apply: (z, run) => xtc_filter(z, d.xtc_threshold, d.xtc_probability, run.generator) };
    }
    if (d.mirostat) {
      s.mirostat = { name: `mirostat 2 (τ ${g(d.mirostat_tau)}, η ${g(d.mirostat_eta)})`,
        apply: (z, run) => mirostat_filter(z, run.mu) };
    }
    return s;
  }

  // The Run of a generation that continues the prompt ids.
  start(ids, generator = null) {
    return new Run(ids, generator, this.mirostat ? 2 * this.mirostat_tau : null);
  }

  // The next token from processed logits: argmax when greedy, else a draw; mirostat then moves mu.
  choose(logits, run) {
    if (this.is_greedy) return greedy(logits);
    const chosen = sample(logits, run.generator);
    if (this.mirostat) run.mu = mirostat_update(run.mu, logits, chosen, this.mirostat_tau, this.mirostat_eta);
    return chosen;
  }
}

// What the stages of one generation read besides the logits: the ids so far, where the prompt
// ends, the generator, mirostat's bound.
export class Run {
  constructor(ids, generator, mu) {
    this.ids = ids.slice();
    this.prompt_length = ids.length;
    this.generator = generator;
    this.mu = mu;
  }

  // The last `last_n` ids (all when null or 0), only the generated ones when generated_only.
  window(last_n, generated_only = false) {
    let start = generated_only ? this.prompt_length : 0;
    if (last_n) start = Math.max(start, this.ids.length - last_n);
    return this.ids.slice(start);
  }
}

// Apply the stages in order; observe(name, logits) sees each result.
export function process(logits, run, stages, observe = null) {
  for (const stage of stages) {
    logits = stage.apply(logits, run);
    if (observe) observe(stage.name, logits);
  }
  return logits;
}

// ---------------------------------------------------------------------------------- the decode loop

// The ids the model reads to predict the token after ids, as sampling.model_input: with a cache,
// only the `fresh` ones not cached yet; a full cache restarts from the last block_size / 2 ids.
export function model_input(ids, cache, block_size, fresh = 1) {
  if (cache === null) return ids.slice(-block_size);
  if (cache.length + fresh > block_size) {
    const window = cache.length ? Math.max(1, Math.floor(block_size / 2)) : block_size;
    cache.reset();
    fresh = Math.min(ids.length, window);
  }
  return ids.slice(ids.length - fresh);
}

// Logits (V) for the token after ids, reading what model_input() says.
export function next_logits(model, ids, cache = null, fresh = 1) {
  const fed = model_input(ids, cache, model.config.block_size, fresh);
  const logits = model.forward(fed, cache), V = model.config.vocab_size;
  return Float64Array.from(logits.subarray(logits.length - V));
}

// The decode loop, as sampling.stream for one text: yields {id, logits} for each new token (id -1
// when the stages left nothing to draw, which ends the text) until max_new_tokens or a stop string.
export function* stream(model, ids, max_new_tokens, decoding = new Decoding(), generator = null, stoi = {},
  observe = null) {
  const stages = decoding.stages(stoi), stops = decoding.stop.map((s) => [...s].map((c) => stoi[c]));
  const run = decoding.start(ids, generator), cache = model.new_cache();
  let fresh = ids.length; // the prompt is read once
  for (let step = 0; step < max_new_tokens; step++) {
    const fed = model_input(run.ids, cache, model.config.block_size, fresh);
    const raw = model.forward(fed, cache), V = model.config.vocab_size;
    let logits = Float64Array.from(raw.subarray(raw.length - V));
    if (observe) { observe("ids", fed); observe("logits", logits); }
    logits = process(logits, run, stages, observe);
    if (!logits.some(Number.isFinite)) { yield { id: -1, logits }; return; }
    const id = decoding.choose(logits, run);
    run.ids.push(id);
    fresh = 1;
    yield { id, logits };
    const text = run.ids.slice(run.prompt_length);
    if (stops.some((s) => s.length <= text.length && s.every((x, j) => text[text.length - s.length + j] === x))) return;
  }
}

// Extend ids by up to max_new_tokens: the new ids.
export function generate(model, ids, max_new_tokens, decoding = new Decoding(), generator = null, stoi = {}) {
  const out = [];
  for (const step of stream(model, ids, max_new_tokens, decoding, generator, stoi)) if (step.id >= 0) out.push(step.id);
  return out;
}
