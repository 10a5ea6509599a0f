// AssemblyScript source of the grey-sample kernel (compiled by scripts/build-kernels.ts into
// ../grey-sample.wasm.ts). The same arithmetic as preprocess.ts, in the same order and precision
// (f64, stored as f32), so its samples are bit-identical to the general path's.

/**
 * Bilinear taps on lookup-table-mapped stored words into `display` (height × width f32), then the
 * per-channel (v * scale - mean[c]) / std[c] into `out` (channels × height × width f32).
 * Axis tables: i32 first and second source index and f32 fraction per output column / row.
 */
export function greySample(
  words: usize,
  wide: bool,
  columns: i32,
  shift: i32,
  mask: i32,
  signBit: i32,
  range: i32,
  signed: bool,
  lut: usize,
  lo: i32,
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
  for (let y: i32 = 0; y < height; y++) {
    const r0 = load<i32>(yi0 + ((<usize>y) << 2)) * columns;
    const r1 = load<i32>(yi1 + ((<usize>y) << 2)) * columns;
    const fy = <f64>load<f32>(yf + ((<usize>y) << 2));
    const row = display + ((<usize>(y * width)) << 2);
    for (let x: i32 = 0; x < width; x++) {
      const x0 = load<i32>(xi0 + ((<usize>x) << 2));
      const x1 = load<i32>(xi1 + ((<usize>x) << 2));
      const fx = <f64>load<f32>(xf + ((<usize>x) << 2));
      let v0: i32, v1: i32, v2: i32, v3: i32;
      if (wide) {
        v0 = ((<i32>load<u16>(words + ((<usize>(r0 + x0)) << 1))) >> shift) & mask;
        v1 = ((<i32>load<u16>(words + ((<usize>(r0 + x1)) << 1))) >> shift) & mask;
        v2 = ((<i32>load<u16>(words + ((<usize>(r1 + x0)) << 1))) >> shift) & mask;
        v3 = ((<i32>load<u16>(words + ((<usize>(r1 + x1)) << 1))) >> shift) & mask;
      } else {
        v0 = ((<i32>load<u8>(words + <usize>(r0 + x0))) >> shift) & mask;
        v1 = ((<i32>load<u8>(words + <usize>(r0 + x1))) >> shift) & mask;
        v2 = ((<i32>load<u8>(words + <usize>(r1 + x0))) >> shift) & mask;
        v3 = ((<i32>load<u8>(words + <usize>(r1 + x1))) >> shift) & mask;
      }
      if (signed) {
        if (v0 & signBit) v0 -= range;
        if (v1 & signBit) v1 -= range;
        if (v2 & signBit) v2 -= range;
        if (v3 & signBit) v3 -= range;
      }
      const a = <f64>load<u8>(lut + <usize>(v0 - lo));
      const b = <f64>load<u8>(lut + <usize>(v1 - lo));
      const d = <f64>load<u8>(lut + <usize>(v2 - lo));
      const e = <f64>load<u8>(lut + <usize>(v3 - lo));
      const top = a + (b - a) * fx;
      const bottom = d + (e - d) * fx;
      store<f32>(row + ((<usize>x) << 2), <f32>(top + (bottom - top) * fy));
    }
  }
  const plane = height * width;
  const s = f64x2.splat(scale);
  for (let c: i32 = 0; c < channels; c++) {
    const mean = load<f64>(means + ((<usize>c) << 3));
    const std = load<f64>(stds + ((<usize>c) << 3));
    const m = f64x2.splat(mean);
    const d = f64x2.splat(std);
    const dst = out + ((<usize>(c * plane)) << 2);
    let p: i32 = 0;
    for (; p + 4 <= plane; p += 4) {
      const v = v128.load(display + ((<usize>p) << 2));
      const low = f64x2.promote_low_f32x4(v);
      const high = f64x2.promote_low_f32x4(i32x4.shuffle(v, v, 2, 3, 0, 1));
      const rl = f32x4.demote_f64x2_zero(f64x2.div(f64x2.sub(f64x2.mul(low, s), m), d));
      const rh = f32x4.demote_f64x2_zero(f64x2.div(f64x2.sub(f64x2.mul(high, s), m), d));
      v128.store(dst + ((<usize>p) << 2), i32x4.shuffle(rl, rh, 0, 1, 4, 5));
    }
    for (; p < plane; p++) {
      const v = <f64>load<f32>(display + ((<usize>p) << 2));
      store<f32>(dst + ((<usize>p) << 2), <f32>((v * scale - mean) / std));
    }
  }
}
