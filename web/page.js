// The page: the controls (one per setting of sampling.Decoding, from lesson.json), the next
// character's distribution after each stage that changes it, and the text, one character at a
// time. The model and the samplers are model.js and sampling.js; this file only draws.

import lesson from "./lesson.json" with { type: "json" };
import { load_model } from "./model.js";
import { Decoding, Generator, SETTINGS, g, softmax, stream } from "./sampling.js";

const MAX_NEW_TOKENS = 500;
const SHOWN = 15; // bars per panel: the model's most likely characters (and the one drawn)

// The page's own words; the lesson's come from sample.py through lesson.json (--lang zh).
const PAGE = {
  en: {
    title: "How a language model picks its next character", preset: "Lesson", prompt: "Prompt", seed: "Seed",
    step: "Step", run: "Run", pause: "Pause", reset: "Reset", text: "The text", free: "your own settings",
    toy: "the toy distribution: 小 0.7, 冬 0.2, 瓜 0.1 (notebooks 2–4)", loading: "loading the model (5.4 MB)…",
    model: "softmax(logits)", next: "next: {}", done: "{} characters: the end of this run (Reset starts again)",
    stopped: "the text ends with a stop string", off: "off", "group.main": "temperature and truncation",
    "group.penalties": "penalties", "group.today": "today's samplers", "group.text": "characters and stop strings",
    command: "the same in the terminal:",
    note: "This page runs the shipped model in your browser, its weights rounded to 16 bits (5.4 MB): its logits "
      + "are within 0.02 of sample.py's. Its random numbers are torch.Generator's own, so a seed draws the same "
      + "numbers as sample.py --seed; the text is sample.py's until a draw falls within that rounding of a "
      + "boundary. Keys: s steps, r runs or pauses.",
  },
  zh: {
    title: "语言模型如何选出下一个字符", preset: "课程", prompt: "提示词", seed: "种子",
    step: "单步", run: "运行", pause: "暂停", reset: "重来", text: "文本", free: "自己的设置",
    toy: "玩具分布：小 0.7、冬 0.2、瓜 0.1（笔记本 2–4）", loading: "正在加载模型（5.4 MB）……",
    model: "softmax(logits)", next: "下一个：{}", done: "已生成 {} 个字符：本次运行结束（点“重来”重新开始）",
    stopped: "文本以停止字符串结尾", off: "关", "group.main": "温度与截断",
    "group.penalties": "惩罚", "group.today": "当今的采样器", "group.text": "字符与停止字符串",
    command: "在终端里做同样的事：",
    note: "这个页面在你的浏览器里运行随仓库提供的模型，权重舍入为 16 位（5.4 MB）：它的 logits 与 sample.py "
      + "的相差不超过 0.02。它的随机数就是 torch.Generator 的随机数，所以同一个种子抽出的数与 sample.py --seed "
      + "相同；文本与 sample.py 的一致，直到某次抽样恰好落在这点舍入误差所及的边界附近。快捷键：s 单步，r 运行或暂停。",
  },
};

const GROUPS = [
  ["group.main", ["temperature", "top_k", "top_p", "min_p", "typical_p", "order"]],
  ["group.penalties", ["repetition_penalty", "frequency_penalty", "presence_penalty", "penalty_last_n",
    "no_repeat_ngram_size"]],
  ["group.today", ["dry_multiplier", "dry_base", "dry_allowed_length", "dry_penalty_last_n", "dynatemp_range",
    "dynatemp_exponent", "epsilon_cutoff", "eta_cutoff", "top_n_sigma", "xtc_threshold", "xtc_probability",
    "mirostat", "mirostat_tau", "mirostat_eta"]],
  ["group.text", ["logit_bias", "dry_sequence_breakers", "stop"]],
];

const TOY = { itos: ["小", "冬", "瓜"], logits: [0.7, 0.2, 0.1].map(Math.log) };

const $ = (id) => document.getElementById(id);
const state = { lang: "en", shipped: null, settings: {}, steps: null, pending: null, ids: [], prompt_length: 0,
  running: false };

// Python's str.format for "{}" and "{0}" placeholders.
const format = (text, ...values) => { let n = 0; return text.replace(/\{(\d*)\}/g, (_, i) => values[i === "" ? n++ : +i]); };
const words = () => ({ ...lesson.words[state.lang], ...PAGE[state.lang] });
const visible = (c) => c.replace(/\n/g, "⏎").replace(/ /g, "·");
const unescape = (text) => text.replace(/\\n/g, "\n");

// ---------------------------------------------------------------------------------- the toy model

// A "model" that always gives the toy distribution's logits, log p: notebooks 2-4's 小 冬 瓜.
class ToyModel {
  constructor() { this.config = { block_size: Infinity, vocab_size: 3 }; }
  new_cache() { return { length: 0, reset() { this.length = 0; }, advance(n) { this.length += n; } }; }
  forward(idx) { // (T, 3): log p at every position
    const T = Math.max(1, idx.length), out = new Float32Array(T * 3);
    for (let t = 0; t < T; t++) out.set(TOY.logits, t * 3);
    return out;
  }
}

// ---------------------------------------------------------------------------------- the controls

function build_controls() {
  const root = $("settings");
  root.replaceChildren();
  const by_name = Object.fromEntries(SETTINGS.map((s) => [s.name, s]));
  GROUPS.forEach(([group, names], number) => {
    const details = document.createElement("details");
    details.open = number === 0;
    const summary = document.createElement("summary");
    summary.dataset.word = group;
    details.append(summary);
    for (const name of names) details.append(control(by_name[name]));
    root.append(details);
  });
}

// One setting: a slider (its low end "off" where the setting may be off), a menu, or a text box.
function control(setting) {
  const row = document.createElement("label");
  row.className = "setting";
  row.title = `${setting.help} (${setting.rule ?? ""})`;
  const name = document.createElement("span");
  name.textContent = setting.name;
  row.append(name);
  let input;
  if (setting.slider) {
    const { low, high, step } = setting.slider;
    input = Object.assign(document.createElement("input"), { type: "range", min: low, max: high, step });
    const shown = document.createElement("output");
    row.append(shown, input);
    input.addEventListener("input", () => { state.settings[setting.name] = slider_value(setting, +input.value); changed(); });
  } else if (setting.choices) {
    input = document.createElement("select");
    for (const choice of setting.choices) input.append(new Option(choice, choice));
    row.append(input);
    input.addEventListener("change", () => { state.settings[setting.name] = input.value; changed(); });
  } else {
    input = Object.assign(document.createElement("input"), { type: "text", spellcheck: false });
    row.append(input);
    input.addEventListener("change", () => { state.settings[setting.name] = input.value; changed(); });
  }
  input.id = `setting-${setting.name}`;
  input.setAttribute("aria-label", setting.name);
  return row;
}

const slider_value = (setting, x) => (setting.slider.off !== null && x === setting.slider.off ? null : x);

// The controls show state.settings.
function show_settings() {
  for (const setting of SETTINGS) {
    const input = $(`setting-${setting.name}`), value = state.settings[setting.name];
    if (setting.slider) {
      input.value = value ?? setting.slider.off;
      input.previousElementSibling.textContent = value === null ? words().off : g(value);
    } else if (setting.choices) input.value = value;
    else input.value = text_of(setting.name, value);
  }
}

// A text setting as the box shows it: logit_bias 'e:-5,z:+2', the others with \n for a newline.
function text_of(name, value) {
  if (name === "logit_bias") return value.map(([c, b]) => `${c === "\n" ? "\\n" : c}:${b >= 0 ? "+" : ""}${g(b)}`).join(",");
  if (name === "stop") return value.length ? value[0].replace(/\n/g, "\\n") : "";
  return value.replace(/\n/g, "\\n");
}

// The Decoding the controls describe, or an Error with one line for the user.
function decoding_of(settings, stoi) {
  const s = { ...settings };
  if (typeof s.logit_bias === "string") s.logit_bias = parse_bias(s.logit_bias, stoi);
  if (typeof s.stop === "string") s.stop = s.stop ? [unescape(s.stop)] : [];
  if (typeof s.dry_sequence_breakers === "string") s.dry_sequence_breakers = unescape(s.dry_sequence_breakers);
  return new Decoding(s);
}

// 'e:-5,z:+2' -> [['e', -5], ['z', 2]], as sample.py's parse_bias.
function parse_bias(text, stoi) {
  const entries = [], entry = /(.):([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:,|$)/suy;
  text = unescape(text);
  while (entry.lastIndex < text.length) {
    const match = entry.exec(text);
    if (!match) throw new RangeError(`logit_bias: write CHAR:BIAS entries separated by commas, as 'e:-5,z:+2'`);
    if (!(match[1] in stoi)) throw new RangeError(`logit_bias: ${JSON.stringify(match[1])} is not in the vocabulary`);
    const bias = +match[2];
    if (!(bias >= -100 && bias <= 100)) throw new RangeError("logit_bias must be each bias in [-100, 100]");
    entries.push([match[1], bias]);
  }
  return entries;
}

// The sample.py flags that select `decoding`, as sample.py's describe().
function describe(decoding) {
  const parts = [];
  for (const [name, value] of Object.entries(decoding.changed())) {
    if (name === "stop") value.forEach((s) => parts.push(`--stop '${s.replace(/\n/g, "\\n")}'`));
    else if (name === "logit_bias") parts.push(`--logit_bias '${text_of(name, value)}'`);
    else parts.push(`--${name} ${typeof value === "string" ? `'${value.replace(/\n/g, "\\n")}'` : g(value)}`);
  }
  return parts.join(" ");
}

// ---------------------------------------------------------------------------------- decoding

function toy() { return $("preset").value === "toy"; }

// Start again from the prompt with the controls' settings: the first character is drawn at once
// (it is what Step will add), so that the panels show its distribution.
function reset() {
  pause();
  const { model, stoi, itos } = toy() ? { model: new ToyModel(), stoi: { 小: 0, 冬: 1, 瓜: 2 }, itos: TOY.itos } : state.shipped;
  state.itos = itos;
  $("prompt").disabled = toy();
  let decoding;
  try {
    decoding = decoding_of(state.settings, stoi);
    const unknown = [...new Set($("prompt").value)].filter((c) => !(c in stoi));
    if (!toy() && unknown.length) throw new RangeError(`characters not in the vocabulary: ${unknown.map((c) => JSON.stringify(c)).join(" ")}`);
  } catch (error) {
    return show_error(error.message);
  }
  const prompt = toy() ? [] : [...$("prompt").value].map((c) => stoi[c]);
  state.ids = prompt.slice();
  state.prompt_length = prompt.length;
  state.events = [];
  state.steps = stream(model, prompt, MAX_NEW_TOKENS, decoding, new Generator().manual_seed(+$("seed").value || 0),
    stoi, (name, value) => state.events.push([name, value]));
  const flags = [describe(decoding)];
  if ($("prompt").value !== lesson.prompt) flags.unshift(`--start '${$("prompt").value.replace(/\n/g, "\\n")}'`);
  if (+$("seed").value !== lesson.seed) flags.push(`--seed ${$("seed").value}`);
  $("command").querySelector("code").textContent = toy() ? "" : `python sample.py --walkthrough ${flags.filter(Boolean).join(" ")}`.trim();
  $("status").className = "";
  advance();
  draw();
}

// Draw the next character into state.pending, with the stages it went through.
function advance() {
  state.events = [];
  const next = state.steps.next();
  state.pending = next.done ? null : { ...next.value, events: state.events };
}

// Step: the pending character joins the text, and the next one is drawn.
function step() {
  if (!state.pending || state.pending.id < 0) return pause();
  state.ids.push(state.pending.id);
  advance();
  draw();
}

function run() {
  if (state.running) return pause();
  state.running = true;
  $("run").textContent = words().pause;
  const tick = () => {
    if (!state.running) return;
    step();
    if (state.running) state.timer = setTimeout(tick, 0);
  };
  tick();
}

function pause() {
  state.running = false;
  clearTimeout(state.timer);
  $("run").textContent = words().run;
}

function show_error(message) {
  pause();
  state.pending = null;
  $("panels").replaceChildren();
  $("status").className = "error";
  $("status").textContent = message;
}

// ---------------------------------------------------------------------------------- drawing

function draw() {
  const w = words(), generated = state.ids.length - state.prompt_length;
  const text = $("text");
  text.replaceChildren();
  state.ids.forEach((id, i) => {
    const c = state.itos[id], span = document.createElement("span");
    if (i < state.prompt_length) span.className = "prompt";
    if (c === "\n") { span.className += " newline"; span.textContent = "⏎\n"; } else span.textContent = c;
    text.append(span);
  });
  text.scrollTop = text.scrollHeight;
  const pending = state.pending;
  if (!pending) $("status").textContent = format(w.done, generated);
  else if (pending.id < 0) $("status").textContent = w.empty;
  else $("status").textContent = `${format(w.next, `'${visible(state.itos[pending.id])}'`)}`;
  $("panels").replaceChildren(...(pending ? panels(pending) : []));
}

// One panel for the model's distribution, then one after each stage that changed it.
function panels(pending) {
  const w = words(), stages = pending.events.filter(([name]) => name !== "ids");
  const shown_ids = top_ids(softmax(stages[0][1]), SHOWN);
  if (pending.id >= 0 && !shown_ids.includes(pending.id)) shown_ids.push(pending.id);
  const out = [];
  stages.forEach(([name, logits], i) => {
    if (i > 0 && logits.every((z, j) => z === stages[i - 1][1][j])) return; // a stage that changed nothing
    out.push(panel(i === 0 ? w.model : format(w.after, name), logits, shown_ids, pending.id));
  });
  return out;
}

function top_ids(probs, n) {
  return Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a] || a - b).slice(0, n);
}

function panel(title, logits, ids, chosen) {
  const w = words(), probs = softmax(logits), kept = logits.filter(Number.isFinite).length;
  const box = document.createElement("figure");
  box.className = "panel";
  const caption = document.createElement("h4");
  const count = document.createElement("small");
  count.textContent = `(${format(w.drawn, kept, logits.length)})`;
  caption.append(title, count);
  const bars = document.createElement("div");
  bars.className = "bars";
  const top = Math.max(...ids.map((i) => probs[i]));
  for (const id of ids) {
    const bar = document.createElement("div"), fill = document.createElement("div"), label = document.createElement("span");
    bar.className = "bar" + (logits[id] === -Infinity ? " removed" : "") + (id === chosen ? " chosen" : "");
    fill.style.height = `${(100 * (logits[id] === -Infinity ? 0.02 : probs[id] / top)).toFixed(1)}%`;
    label.textContent = visible(state.itos[id]);
    bar.title = `'${visible(state.itos[id])}' p = ${probs[id].toFixed(3)}, logit ${logits[id] === -Infinity ? "-inf" : logits[id].toFixed(3)}`;
    bar.setAttribute("aria-label", bar.title);
    bar.append(fill, label);
    bars.append(bar);
  }
  box.append(caption, bars);
  return box;
}

// ---------------------------------------------------------------------------------- presets and language

function presets() {
  const select = $("preset"), w = words(), chosen = select.value;
  select.replaceChildren(
    ...lesson.lessons.map((l, i) => new Option(`${i + 1}. ${l[state.lang][0]}: ${l[state.lang][1]}`, String(i))),
    new Option(`小 冬 瓜: ${w.toy}`, "toy"), new Option(w.free, "free"));
  select.value = chosen || "0";
}

function choose_preset() {
  const preset = $("preset").value;
  if (preset !== "free") {
    state.settings = Object.fromEntries(SETTINGS.map((s) => [s.name, s.default]));
    if (preset !== "toy") Object.assign(state.settings, lesson.lessons[+preset].settings);
    $("prompt").value = lesson.prompt;
    $("seed").value = lesson.seed;
  }
  show_heading();
  show_settings();
  reset();
}

function show_heading() {
  const preset = $("preset").value;
  $("lesson").textContent = /^\d+$/.test(preset) ? lesson.lessons[+preset][state.lang].join(": ") : "";
}

function changed() {
  $("preset").value = "free";
  show_heading();
  show_settings();
  reset();
}

function language(lang) {
  state.lang = lang;
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  $("en").setAttribute("aria-pressed", lang === "en");
  $("zh").setAttribute("aria-pressed", lang === "zh");
  for (const element of document.querySelectorAll("[data-word]")) element.textContent = words()[element.dataset.word];
  $("note").textContent = words().note;
  $("run").textContent = state.running ? words().pause : words().run;
  presets();
  show_heading();
  if (state.shipped) { show_settings(); draw(); }
}

// ---------------------------------------------------------------------------------- start

async function main() {
  build_controls();
  language(new URLSearchParams(location.search).get("lang") === "zh" ? "zh" : "en");
  $("status").textContent = words().loading;
  const response = await fetch("model.bin");
  state.shipped = load_model(await response.arrayBuffer());
  $("preset").addEventListener("change", choose_preset);
  for (const id of ["prompt", "seed"]) $(id).addEventListener("change", () => { if (!toy()) reset(); });
  $("step").addEventListener("click", step);
  $("run").addEventListener("click", run);
  $("reset").addEventListener("click", reset);
  $("en").addEventListener("click", () => language("en"));
  $("zh").addEventListener("click", () => language("zh"));
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, textarea, select") || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "s") step();
    if (event.key === "r") run();
  });
  choose_preset();
  document.body.dataset.ready = String(performance.now()); // milliseconds from navigation to a usable page
}

main().catch((error) => show_error(`the page could not start: ${error.message}`));
