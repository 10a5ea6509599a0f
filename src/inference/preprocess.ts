import type { InstanceManifest, WindowSetting } from '../models/manifest.ts';
import type { DecodedImage } from '../imaging/decode.ts';
import {
  expandedTable,
  greySample,
  type SampleAllocator,
  type StoredValueTable,
} from '../imaging/kernels/grey-sample.ts';
import type { NativeGreyFrame } from '../imaging/native-frame.ts';
import { minMax } from '../imaging/volume.ts';

// Manifest-driven preprocessing: pixels → 8-bit display image (VOI window, MONOCHROME1 inversion) →
// bilinear resize → channels → scale, mean/std → one NCHW sample. Models trained on display-ready
// pictures (JPEG/PNG) expect the display image, which is why the window comes before everything else.

export type PreprocessSpec = Pick<InstanceManifest, 'input' | 'preprocessing'>;

export interface DisplayImage {
  /** Values 0..255, rows × columns × channels, interleaved. */
  data: Float32Array;
  rows: number;
  columns: number;
  channels: 1 | 3;
}

/** One sample, channels × height × width, ready to be stacked along N. */
export function preprocess(image: DecodedImage, spec: PreprocessSpec, frame = 0): Float32Array {
  const display = toDisplay(image, spec.preprocessing.window, spec.preprocessing.invertMonochrome1, frame);
  const { height, width, channels } = spec.input;
  const resized = resizeBilinear(display, height, width);
  const { scale, mean, std } = spec.preprocessing;
  const plane = height * width;
  const out = new Float32Array(channels * plane);
  for (let c = 0; c < channels; c++) {
    const m = mean[c]!;
    // A multiplication by the reciprocal (what the fast path's SIMD kernel does, much cheaper than a division).
    const inverse = 1 / std[c]!;
    for (let p = 0; p < plane; p++) {
      out[c * plane + p] = (sourceChannel(resized, p, c, channels) * scale - m) * inverse;
    }
  }
  return out;
}

/** The value for output channel c: grey copied to every channel, or RGB reduced to luma (BT.601). */
function sourceChannel(img: DisplayImage, p: number, c: number, channels: number): number {
  if (img.channels === 1) return img.data[p]!;
  if (channels === 3) return img.data[p * 3 + c]!;
  return 0.299 * img.data[p * 3]! + 0.587 * img.data[p * 3 + 1]! + 0.114 * img.data[p * 3 + 2]!;
}

export function toDisplay(
  image: DecodedImage,
  window: WindowSetting,
  invertMonochrome1: boolean,
  frame = 0,
): DisplayImage {
  const pixels = image.pixels[frame];
  if (!pixels) throw new RangeError(`frame ${frame} was not decoded`);
  const out = new Float32Array(pixels.length);
  if (image.samplesPerPixel === 3) {
    // Colour images are display values already; only wider-than-8-bit samples need scaling.
    const max = 2 ** Math.max(8, image.bitsStored) - 1;
    for (let i = 0; i < pixels.length; i++) out[i] = Math.round(clamp((pixels[i]! * 255) / max, 0, 255));
    return { data: out, rows: image.rows, columns: image.columns, channels: 3 };
  }
  const { center, width } = resolveWindow(image, pixels, window);
  const invert = invertMonochrome1 && image.photometric === 'MONOCHROME1';
  for (let i = 0; i < pixels.length; i++) out[i] = voi(pixels[i]!, center, width, invert);
  return { data: out, rows: image.rows, columns: image.columns, channels: 1 };
}

/** width 0 means a constant image: there is no range to stretch. */
function resolveWindow(
  image: DecodedImage,
  pixels: Float32Array,
  window: WindowSetting,
): { center: number; width: number } {
  const chosen = chosenWindow(window, image.windowCenter, image.windowWidth);
  if (chosen) return chosen;
  const { min, max } = minMax(pixels);
  return minMaxWindow(min, max);
}

/** The manifest's fixed window, or the file's when asked for and present; else none (min–max). */
function chosenWindow(
  window: WindowSetting,
  fileCenter: number | undefined,
  fileWidth: number | undefined,
): { center: number; width: number } | undefined {
  if (typeof window === 'object') return window;
  if (window === 'file' && fileCenter !== undefined && fileWidth !== undefined) {
    return { center: fileCenter, width: fileWidth };
  }
  return undefined;
}

/** Smallest and largest value (Infinity / -Infinity when empty). */
/** A window of width max-min+1 centred so that min maps to 0 and max to 255. */
function minMaxWindow(min: number, max: number): { center: number; width: number } {
  if (!(max > min)) return { center: min, width: 0 };
  return { center: (min + max + 1) / 2, width: max - min + 1 };
}

/** PS3.3 C.11.2.1.2.1 linear VOI function to 0..255, rounded to 8 bits, then MONOCHROME1 inversion. */
function voi(x: number, center: number, width: number, invert: boolean): number {
  let y: number;
  if (width === 0) y = 0;
  else if (x <= center - 0.5 - (width - 1) / 2) y = 0;
  else if (x > center - 0.5 + (width - 1) / 2) y = 255;
  else y = width === 1 ? 255 : Math.round(((x - (center - 0.5)) / (width - 1) + 0.5) * 255);
  return invert ? 255 - y : y;
}

/** Bilinear with half-pixel centres (align_corners=false), no antialiasing, no aspect ratio kept. */
export function resizeBilinear(img: DisplayImage, outRows: number, outColumns: number): DisplayImage {
  const { rows, columns, channels, data } = img;
  if (rows === outRows && columns === outColumns) return img;
  const out = new Float32Array(outRows * outColumns * channels);
  const xs = axis(columns, outColumns);
  const ys = axis(rows, outRows);
  for (let y = 0; y < outRows; y++) {
    const y0 = ys.i0[y]!;
    const y1 = ys.i1[y]!;
    const fy = ys.f[y]!;
    for (let x = 0; x < outColumns; x++) {
      const x0 = xs.i0[x]!;
      const x1 = xs.i1[x]!;
      const fx = xs.f[x]!;
      for (let c = 0; c < channels; c++) {
        const a = data[(y0 * columns + x0) * channels + c]!;
        const b = data[(y0 * columns + x1) * channels + c]!;
        const d = data[(y1 * columns + x0) * channels + c]!;
        const e = data[(y1 * columns + x1) * channels + c]!;
        const top = a + (b - a) * fx;
        const bottom = d + (e - d) * fx;
        out[(y * outColumns + x) * channels + c] = top + (bottom - top) * fy;
      }
    }
  }
  return { data: out, rows: outRows, columns: outColumns, channels };
}

export function axis(inSize: number, outSize: number): { i0: Int32Array; i1: Int32Array; f: Float32Array } {
  const i0 = new Int32Array(outSize);
  const i1 = new Int32Array(outSize);
  const f = new Float32Array(outSize);
  const ratio = inSize / outSize;
  for (let o = 0; o < outSize; o++) {
    const src = Math.max(0, (o + 0.5) * ratio - 0.5);
    const lo = Math.min(Math.floor(src), inSize - 1);
    i0[o] = lo;
    i1[o] = Math.min(lo + 1, inSize - 1);
    f[o] = src - lo;
  }
  return { i0, i1, f };
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

/**
 * preprocess() for a native greyscale frame without the intermediate images: each stored word becomes
 * a display byte through one lookup table (Bits Stored masking, sign, rescale, window, inversion, with
 * the arithmetic of decode.ts and toDisplay, so the sample is bit-identical to the general path), then
 * the bilinear taps and the per-channel scale, mean and std. `output` gives the array the sample is
 * written to.
 */
export function preprocessGreyFrame(
  frame: NativeGreyFrame,
  spec: PreprocessSpec,
  applyModalityLut: boolean,
  output?: SampleAllocator,
): Float32Array {
  const { header } = frame;
  const bits = storedBits(header);
  const rescale = {
    on: applyModalityLut && (frame.rescaleSlope !== 1 || frame.rescaleIntercept !== 0),
    slope: frame.rescaleSlope,
    intercept: frame.rescaleIntercept,
  };
  const { window, invertMonochrome1 } = spec.preprocessing;
  const invert = invertMonochrome1 && header.photometric === 'MONOCHROME1';

  const voiWindow = chosenWindow(window, frame.windowCenter, frame.windowWidth);
  // A table from every raw stored word straight to its display byte: the kernel's taps then do one
  // lookup each, with no masking or sign arithmetic.
  const signBit = bits.signed ? bits.signBit : 0;
  const words = header.bitsAllocated === 16 ? 65536 : 256;
  const { shift, mask } = bits;
  let table: Uint8Array | StoredValueTable;
  if (voiWindow) {
    // Over the whole stored range, so the other slices of a series share it.
    const lo = bits.signed ? -bits.signBit : 0;
    const hi = lo + bits.range - 1;
    const key = [
      words,
      shift,
      bits.range,
      bits.signed,
      rescale.on,
      rescale.slope,
      rescale.intercept,
      voiWindow.center,
      voiWindow.width,
      invert,
    ].join();
    table = cachedTable(key, () =>
      expandedTable(
        { lut: displayLut(lo, hi, rescale, voiWindow, invert), lo, hi, shift, mask, signBit },
        words,
      ),
    );
  } else {
    // Min and max of the modality values are those of the stored ones mapped (the rescale is monotone).
    const { lo, hi } = storedSpan(storedWords(frame.bytes, header.bitsAllocated), bits);
    const a = modalityValue(lo, rescale);
    const b = modalityValue(hi, rescale);
    const lut = displayLut(lo, hi, rescale, minMaxWindow(Math.min(a, b), Math.max(a, b)), invert);
    table = { lut, lo, hi, shift, mask, signBit };
  }

  const { height, width, channels } = spec.input;
  return greySample({
    frame: frame.bytes,
    wide: header.bitsAllocated === 16,
    columns: header.columns,
    table,
    xs: axis(header.columns, width),
    ys: axis(header.rows, height),
    channels,
    scale: spec.preprocessing.scale,
    mean: spec.preprocessing.mean,
    std: spec.preprocessing.std,
    ...(output ? { output } : {}),
  });
}

interface StoredBits {
  shift: number;
  mask: number;
  signBit: number;
  range: number;
  signed: boolean;
}

function storedBits(h: NativeGreyFrame['header']): StoredBits {
  // Small integers (| 0) keep the per-word arithmetic in int32.
  return {
    shift: (h.highBit + 1 - h.bitsStored) | 0,
    mask: (2 ** h.bitsStored - 1) | 0,
    signBit: (2 ** (h.bitsStored - 1)) | 0,
    range: (2 ** h.bitsStored) | 0,
    signed: h.pixelRepresentation === 1,
  };
}

function modalityValue(s: number, r: { on: boolean; slope: number; intercept: number }): number {
  return r.on ? Math.fround(s * r.slope + r.intercept) : s;
}

function storedSpan(words: Uint8Array | Uint16Array, bits: StoredBits): { lo: number; hi: number } {
  const { shift, mask, signBit, range, signed } = bits;
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < words.length; i++) {
    let v = (words[i]! >> shift) & mask;
    if (signed && v & signBit) v -= range;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return { lo, hi };
}

function storedWords(bytes: Uint8Array, bitsAllocated: number): Uint8Array | Uint16Array {
  if (bitsAllocated === 8) return bytes;
  // A typed view needs an even offset; an odd one (a malformed file) costs a copy. Not bytes.slice():
  // on a Buffer that is a view at the same offset.
  const aligned = bytes.byteOffset % 2 === 0 ? bytes : new Uint8Array(bytes);
  return new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2);
}

// A series shares its rescale and window, so its slices share one table.
const TABLE_CACHE_SIZE = 8;
const tableCache = new Map<string, Uint8Array>();

function cachedTable(key: string, build: () => Uint8Array): Uint8Array {
  const cached = tableCache.get(key);
  if (cached) return cached;
  const table = build();
  if (tableCache.size >= TABLE_CACHE_SIZE) tableCache.delete(tableCache.keys().next().value!);
  tableCache.set(key, table);
  return table;
}

/** Stored value lo..hi → display byte. */
function displayLut(
  lo: number,
  hi: number,
  rescale: { on: boolean; slope: number; intercept: number },
  window: { center: number; width: number },
  invert: boolean,
): Uint8Array {
  const lut = new Uint8Array(hi - lo + 1);
  for (let s = lo; s <= hi; s++)
    lut[s - lo] = voi(modalityValue(s, rescale), window.center, window.width, invert);
  return lut;
}
