import { GREY_SAMPLE_WASM } from './grey-sample.wasm.ts';

// The inner loops of preprocessGreyFrame (bilinear taps through the display table, then the per-channel
// normalisation) as WebAssembly. The same loops in JavaScript took ~0.85 ms per 512×512 → 224×224×3
// sample, the whole of what the worker path adds to a SqueezeNet inference; compiled from
// AssemblyScript (assembly/grey-sample.ts) with f64x2 SIMD for the normalisation they take about half.
// The arithmetic is the JavaScript's, in the same order and precision, so samples stay bit-identical.

export interface GreySampleArgs {
  /** The stored frame as it lies in the file: 8-bit or little-endian 16-bit words. */
  frame: Uint8Array;
  wide: boolean;
  columns: number;
  shift: number;
  mask: number;
  signBit: number;
  range: number;
  signed: boolean;
  /** Display byte of each stored value lo, lo + 1, … */
  lut: Uint8Array;
  lo: number;
  xs: { i0: Int32Array; i1: Int32Array; f: Float32Array };
  ys: { i0: Int32Array; i1: Int32Array; f: Float32Array };
  channels: number;
  scale: number;
  mean: readonly number[];
  std: readonly number[];
}

type GreySampleFn = (...args: number[]) => void;

const PAGE = 65536;
let kernel: { memory: WebAssembly.Memory; run: GreySampleFn } | undefined;

function instance(): { memory: WebAssembly.Memory; run: GreySampleFn } {
  if (!kernel) {
    const memory = new WebAssembly.Memory({ initial: 1 });
    const module = new WebAssembly.Module(Buffer.from(GREY_SAMPLE_WASM, 'base64'));
    const exports = new WebAssembly.Instance(module, { env: { memory } }).exports;
    kernel = { memory, run: exports.greySample as GreySampleFn };
  }
  return kernel;
}

/** One sample, channels × height × width, from one stored frame. */
export function greySample(a: GreySampleArgs): Float32Array {
  const { memory, run } = instance();
  const width = a.xs.f.length;
  const height = a.ys.f.length;
  const plane = width * height;
  // Layout: axis tables, channel constants, display table, display plane, sample, frame.
  let end = 0;
  const place = (bytes: number): number => {
    const at = end;
    end = (end + bytes + 15) & ~15;
    return at;
  };
  const xi0 = place(width * 4);
  const xi1 = place(width * 4);
  const xf = place(width * 4);
  const yi0 = place(height * 4);
  const yi1 = place(height * 4);
  const yf = place(height * 4);
  const means = place(a.channels * 8);
  const stds = place(a.channels * 8);
  const lut = place(a.lut.length);
  const display = place(plane * 4);
  const out = place(a.channels * plane * 4);
  const frame = place(a.frame.byteLength);
  if (memory.buffer.byteLength < end) memory.grow(Math.ceil((end - memory.buffer.byteLength) / PAGE));

  const bytes = new Uint8Array(memory.buffer);
  const copy = (at: number, view: ArrayBufferView) =>
    bytes.set(new Uint8Array(view.buffer, view.byteOffset, view.byteLength), at);
  copy(xi0, a.xs.i0);
  copy(xi1, a.xs.i1);
  copy(xf, a.xs.f);
  copy(yi0, a.ys.i0);
  copy(yi1, a.ys.i1);
  copy(yf, a.ys.f);
  copy(means, Float64Array.from(a.mean.slice(0, a.channels)));
  copy(stds, Float64Array.from(a.std.slice(0, a.channels)));
  bytes.set(a.lut, lut);
  bytes.set(a.frame, frame);
  run(
    frame,
    a.wide ? 1 : 0,
    a.columns,
    a.shift,
    a.mask,
    a.signBit,
    a.range,
    a.signed ? 1 : 0,
    lut,
    a.lo,
    xi0,
    xi1,
    xf,
    yi0,
    yi1,
    yf,
    height,
    width,
    display,
    a.channels,
    a.scale,
    means,
    stds,
    out,
  );
  return new Float32Array(memory.buffer, out, a.channels * plane).slice();
}
