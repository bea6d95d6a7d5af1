// model.js's one hot loop, y = W x + b, as a WebAssembly function with SIMD: four multiply-adds at
// a time (f32x4), where plain JavaScript does one. Measured in Node on a 2-core AMD EPYC, a
// (768, 192) matrix: 6.9 billion multiply-adds a second here, 1.65 for the fastest JavaScript loop.
//
// The module is written out below as its bytes, instruction by instruction, so that the page
// needs no compiler and no build step; the WebAssembly text it encodes:
//
//   (func (export "linear") (param $x $w $b $y $n_in $n_out i32)      ;; addresses in bytes
//     (local $o $i i32) (local $acc v128) (local $end i32)
//     $end = $n_in * 4
//     for ($o = 0; $o < $n_out; $o++):                                 ;; one row of W
//       $acc = f32x4(0, 0, 0, 0)
//       for ($i = 0; $i < $end; $i += 16):                              ;; four columns
//         $acc = $acc + v128.load($w + $i) * v128.load($x + $i)
//       f32[$y + 4 $o] = (acc_0 + acc_1) + (acc_2 + acc_3) + f32[$b + 4 $o]
//       $w += $end
//
// n_in must be a multiple of 4 (model.js checks).

const X = 0, W = 1, B = 2, Y = 3, N_IN = 4, N_OUT = 5, O = 6, I = 7, ACC = 8, END = 9; // locals
const get = (i) => [0x20, i], set = (i) => [0x21, i], i32 = (n) => [0x41, ...leb(n)];
const I32_ADD = 0x6a, I32_SHL = 0x74, I32_GE_U = 0x4f, F32_ADD = 0x92, END_ = 0x0b;
const BLOCK = [0x02, 0x40], LOOP = [0x03, 0x40], br = (depth) => [0x0c, depth], br_if = (depth) => [0x0d, depth];
const simd = (op, ...rest) => [0xfd, ...leb(op), ...rest];
const V128_LOAD = simd(0x00, 4, 0), F32X4_SPLAT = simd(0x13), F32X4_ADD = simd(0xe4), F32X4_MUL = simd(0xe6);
const lane = (n) => [...get(ACC), ...simd(0x1f, n)]; // f32x4.extract_lane n of $acc
const F32_LOAD = [0x2a, 2, 0], F32_STORE = [0x38, 2, 0], F32_ZERO = [0x43, 0, 0, 0, 0];

// unsigned LEB128, WebAssembly's integers
function leb(n) {
  const out = [];
  do { let byte = n & 0x7f; n >>>= 7; if (n) byte |= 0x80; out.push(byte); } while (n);
  return out;
}

const vector = (items) => [...leb(items.length), ...items.flat()];
const section = (id, bytes) => [id, ...leb(bytes.length), ...bytes];
const name = (text) => vector([...new TextEncoder().encode(text)]);

const BODY = [
  ...vector([[2, 0x7f], [1, 0x7b], [1, 0x7f]]), // locals: $o $i i32, $acc v128, $end i32
  ...get(N_IN), ...i32(2), I32_SHL, ...set(END),
  ...BLOCK, ...LOOP, // rows
  ...get(O), ...get(N_OUT), I32_GE_U, ...br_if(1),
  ...F32_ZERO, ...F32X4_SPLAT, ...set(ACC),
  ...i32(0), ...set(I),
  ...BLOCK, ...LOOP, // columns
  ...get(I), ...get(END), I32_GE_U, ...br_if(1),
  ...get(ACC), ...get(W), ...get(I), I32_ADD, ...V128_LOAD, ...get(X), ...get(I), I32_ADD, ...V128_LOAD,
  ...F32X4_MUL, ...F32X4_ADD, ...set(ACC),
  ...get(I), ...i32(16), I32_ADD, ...set(I),
  ...br(0), END_, END_,
  ...get(Y), ...get(O), ...i32(2), I32_SHL, I32_ADD,
  ...lane(0), ...lane(1), F32_ADD, ...lane(2), ...lane(3), F32_ADD, F32_ADD,
  ...get(B), ...get(O), ...i32(2), I32_SHL, I32_ADD, ...F32_LOAD, F32_ADD, ...F32_STORE,
  ...get(W), ...get(END), I32_ADD, ...set(W),
  ...get(O), ...i32(1), I32_ADD, ...set(O),
  ...br(0), END_, END_,
  END_,
];

export const MODULE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // "\0asm", version 1
  ...section(1, vector([[0x60, ...vector(Array(6).fill(0x7f)), 0]])), // type: (i32 x 6) -> ()
  ...section(2, vector([[...name("env"), ...name("memory"), 0x02, 0x00, 0x01]])), // import a memory of >= 1 page
  ...section(3, vector([[0]])), // one function, of type 0
  ...section(7, vector([[...name("linear"), 0x00, 0]])), // exported
  ...section(10, vector([[...leb(BODY.length), ...BODY]])),
]);

// {linear(x, w, b, y, n_in, n_out)} over `memory`, a WebAssembly.Memory; null where the engine
// has no WebAssembly SIMD (model.js then uses its JavaScript loop).
export function instantiate(memory) {
  try {
    return new WebAssembly.Instance(new WebAssembly.Module(MODULE), { env: { memory } }).exports;
  } catch {
    return null;
  }
}
