// AssemblyScript source of the grey-sample kernel (compiled by scripts/build-kernels.ts into
// ../grey-sample.wasm.ts). The same arithmetic as preprocess.ts, in the same order and precision
// (f64, stored as f32), so its samples are bit-identical to the general path's.

/**
 * Display byte of every possible stored word, so the taps need one lookup and no bit arithmetic:
 * out[w] = lut[value(w) - lo] with value(w) the word's Bits Stored field, sign-extended (signBit 0
 * when unsigned). Values outside lo..hi (absent from the frame the table was made for) get 0.
 */
export function expandTable(
  lut: usize,
  lo: i32,
  hi: i32,
  shift: i32,
  mask: i32,
  signBit: i32,
  words: i32,
  out: usize,
): void {
  for (let w: i32 = 0; w < words; w++) {
    let v = (w >> shift) & mask;
    v -= (v & signBit) << 1;
    store<u8>(out + <usize>w, v < lo || v > hi ? 0 : load<u8>(lut + <usize>(v - lo)));
  }
}

/** One output row of bilinear taps; T is the stored word (u8 or u16): one specialised copy each. */
function tapRow<T>(
  r0: usize,
  r1: usize,
  fy: f64,
  table: usize,
  xi0: usize,
  xi1: usize,
  xf: usize,
  width: i32,
  row: usize,
): void {
  const size = <usize>sizeof<T>();
  for (let x: i32 = 0; x < width; x++) {
    const o0 = <usize>load<i32>(xi0 + ((<usize>x) << 2)) * size;
    const o1 = <usize>load<i32>(xi1 + ((<usize>x) << 2)) * size;
    const fx = <f64>load<f32>(xf + ((<usize>x) << 2));
    const a = <f64>load<u8>(table + <usize>load<T>(r0 + o0));
    const b = <f64>load<u8>(table + <usize>load<T>(r0 + o1));
    const d = <f64>load<u8>(table + <usize>load<T>(r1 + o0));
    const e = <f64>load<u8>(table + <usize>load<T>(r1 + o1));
    const top = a + (b - a) * fx;
    const bottom = d + (e - d) * fx;
    store<f32>(row + ((<usize>x) << 2), <f32>(top + (bottom - top) * fy));
  }
}

/**
 * Bilinear taps on table-mapped stored words into `display` (height × width f32), then the
 * per-channel (v * scale - mean[c]) * (1 / std[c]) into `out` (channels × height × width f32).
 * `table` maps a raw stored word to its display byte (expandTable). Axis tables: i32 first and second
 * source index and f32 fraction per output column / row.
 */
export function greySample(
  words: usize,
  wide: bool,
  columns: i32,
  table: usize,
  xi0: usize,
  xi1: usize,
  xf: usize,
  yi0: usize,
  yi1: usize,
  yf: usize,
  height: i32,
  width: i32,
  display: usize,
  channels: i32,
  scale: f64,
  means: usize,
  stds: usize,
  out: usize,
): void {
  const wordShift: i32 = wide ? 1 : 0;
  for (let y: i32 = 0; y < height; y++) {
    const r0 = words + ((<usize>(load<i32>(yi0 + ((<usize>y) << 2)) * columns)) << wordShift);
    const r1 = words + ((<usize>(load<i32>(yi1 + ((<usize>y) << 2)) * columns)) << wordShift);
    const fy = <f64>load<f32>(yf + ((<usize>y) << 2));
    const row = display + ((<usize>(y * width)) << 2);
    if (wide) tapRow<u16>(r0, r1, fy, table, xi0, xi1, xf, width, row);
    else tapRow<u8>(r0, r1, fy, table, xi0, xi1, xf, width, row);
  }
  const plane = height * width;
  const s = f64x2.splat(scale);
  for (let c: i32 = 0; c < channels; c++) {
    const mean = load<f64>(means + ((<usize>c) << 3));
    const inverse = 1.0 / load<f64>(stds + ((<usize>c) << 3));
    const m = f64x2.splat(mean);
    const r = f64x2.splat(inverse);
    const dst = out + ((<usize>(c * plane)) << 2);
    let p: i32 = 0;
    for (; p + 4 <= plane; p += 4) {
      const v = v128.load(display + ((<usize>p) << 2));
      const low = f64x2.promote_low_f32x4(v);
      const high = f64x2.promote_low_f32x4(i32x4.shuffle(v, v, 2, 3, 0, 1));
      const rl = f32x4.demote_f64x2_zero(f64x2.mul(f64x2.sub(f64x2.mul(low, s), m), r));
      const rh = f32x4.demote_f64x2_zero(f64x2.mul(f64x2.sub(f64x2.mul(high, s), m), r));
      v128.store(dst + ((<usize>p) << 2), i32x4.shuffle(rl, rh, 0, 1, 4, 5));
    }
    for (; p < plane; p++) {
      const v = <f64>load<f32>(display + ((<usize>p) << 2));
      store<f32>(dst + ((<usize>p) << 2), <f32>((v * scale - mean) * inverse));
    }
  }
}
