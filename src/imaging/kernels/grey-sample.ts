import { GREY_SAMPLE_WASM } from './grey-sample.wasm.ts';

// The inner loops of preprocessGreyFrame (bilinear taps through the display table, then the per-channel
// normalisation) as WebAssembly. The same loops in JavaScript took ~0.85 ms per 512×512 → 224×224×3
// sample, the whole of what the worker path adds to a SqueezeNet inference; compiled from
// AssemblyScript (assembly/grey-sample.ts), with one table lookup per tap (raw word → display byte,
// no bit arithmetic) and f64x2 SIMD for the normalisation, they take about a quarter (~0.23 ms).
// The arithmetic is the JavaScript's, in the same order and precision, so samples stay bit-identical.

/** Display byte of each stored value lo..hi, and how a raw word gives its stored value. */
export interface StoredValueTable {
  lut: Uint8Array;
  lo: number;
  hi: number;
  shift: number;
  mask: number;
  /** 0 for unsigned data. */
  signBit: number;
}

export interface GreySampleArgs {
  /** The stored frame as it lies in the file: 8-bit or little-endian 16-bit words. */
  frame: Uint8Array;
  wide: boolean;
  columns: number;
  /**
   * Display byte of every raw word (256 or 65,536 entries, see expandedTable), or a stored-value table
   * that the kernel expands first (for a table used once).
   */
  table: Uint8Array | StoredValueTable;
  xs: { i0: Int32Array; i1: Int32Array; f: Float32Array };
  ys: { i0: Int32Array; i1: Int32Array; f: Float32Array };
  channels: number;
  scale: number;
  mean: readonly number[];
  std: readonly number[];
  /** Where the sample goes (given its length); unset: a new array. */
  output?: SampleAllocator;
}

/** A Float32Array of `length` values for a sample, e.g. one recycled from an earlier sample. */
export type SampleAllocator = (length: number) => Float32Array;

type KernelFn = (...args: number[]) => void;

const PAGE = 65536;
let kernel: { memory: WebAssembly.Memory; greySample: KernelFn; expandTable: KernelFn } | undefined;

function instance(): NonNullable<typeof kernel> {
  if (!kernel) {
    const memory = new WebAssembly.Memory({ initial: 1 });
    const module = new WebAssembly.Module(Buffer.from(GREY_SAMPLE_WASM, 'base64'));
    const exports = new WebAssembly.Instance(module, { env: { memory } }).exports;
    kernel = {
      memory,
      greySample: exports.greySample as KernelFn,
      expandTable: exports.expandTable as KernelFn,
    };
  }
  return kernel;
}

/** Bump allocation in the kernel's memory, 16-byte aligned, from 0 on each call. */
function layout(): { place: (bytes: number) => number; reserve: () => Uint8Array } {
  const { memory } = instance();
  let end = 0;
  return {
    place(bytes: number): number {
      const at = end;
      end = (end + bytes + 15) & ~15;
      return at;
    },
    reserve(): Uint8Array {
      if (memory.buffer.byteLength < end) memory.grow(Math.ceil((end - memory.buffer.byteLength) / PAGE));
      return new Uint8Array(memory.buffer);
    },
  };
}

function expandInto(
  bytes: Uint8Array,
  lutAt: number,
  tableAt: number,
  t: StoredValueTable,
  words: number,
): void {
  bytes.set(t.lut, lutAt);
  instance().expandTable(lutAt, t.lo, t.hi, t.shift, t.mask, t.signBit, words, tableAt);
}

/** The raw-word table for `words` (256 or 65,536) possible words, to keep for the frames of a series. */
export function expandedTable(t: StoredValueTable, words: number): Uint8Array {
  const { place, reserve } = layout();
  const lut = place(t.lut.length);
  const table = place(words);
  const bytes = reserve();
  expandInto(bytes, lut, table, t, words);
  return bytes.slice(table, table + words);
}

/** One sample, channels × height × width, from one stored frame. */
export function greySample(a: GreySampleArgs): Float32Array {
  const { memory, greySample: run } = instance();
  const width = a.xs.f.length;
  const height = a.ys.f.length;
  const plane = width * height;
  const words = a.wide ? 65536 : 256;
  const expand = a.table instanceof Uint8Array ? undefined : a.table;
  const { place, reserve } = layout();
  // Layout: axis tables, channel constants, word table (and what it is expanded from), display plane,
  // sample, frame.
  const xi0 = place(width * 4);
  const xi1 = place(width * 4);
  const xf = place(width * 4);
  const yi0 = place(height * 4);
  const yi1 = place(height * 4);
  const yf = place(height * 4);
  const means = place(a.channels * 8);
  const stds = place(a.channels * 8);
  const table = place(words);
  const lut = expand ? place(expand.lut.length) : 0;
  const display = place(plane * 4);
  const out = place(a.channels * plane * 4);
  const frame = place(a.frame.byteLength);
  const bytes = reserve();

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
  if (expand) expandInto(bytes, lut, table, expand, words);
  else if ((a.table as Uint8Array).length !== words)
    throw new RangeError(`the word table needs ${words} entries`);
  else bytes.set(a.table as Uint8Array, table);
  bytes.set(a.frame, frame);
  run(
    frame,
    a.wide ? 1 : 0,
    a.columns,
    table,
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
  const sample = new Float32Array(memory.buffer, out, a.channels * plane);
  if (!a.output) return sample.slice();
  const into = a.output(sample.length);
  if (into.length !== sample.length) throw new RangeError(`the sample needs ${sample.length} values`);
  into.set(sample);
  return into;
}
