import type { InstanceManifest, WindowSetting } from '../../src/models/manifest.ts';
import type { DecodedImage } from './decode.ts';

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
    const s = std[c]!;
    for (let p = 0; p < plane; p++) {
      out[c * plane + p] = (sourceChannel(resized, p, c, channels) * scale - m) / s;
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
  if (width === 0) {
    out.fill(invert ? 255 : 0);
  } else {
    // PS3.3 C.11.2.1.2.1 linear VOI function, output range 0..255, rounded to 8 bits.
    const lower = center - 0.5 - (width - 1) / 2;
    const upper = center - 0.5 + (width - 1) / 2;
    const span = width - 1;
    for (let i = 0; i < pixels.length; i++) {
      const x = pixels[i]!;
      let y: number;
      if (x <= lower) y = 0;
      else if (x > upper) y = 255;
      else y = span === 0 ? 255 : Math.round(((x - (center - 0.5)) / span + 0.5) * 255);
      out[i] = invert ? 255 - y : y;
    }
  }
  return { data: out, rows: image.rows, columns: image.columns, channels: 1 };
}

/** width 0 means a constant image: there is no range to stretch. */
function resolveWindow(
  image: DecodedImage,
  pixels: Float32Array,
  window: WindowSetting,
): { center: number; width: number } {
  if (typeof window === 'object') return window;
  if (window === 'file' && image.windowCenter !== undefined && image.windowWidth !== undefined) {
    return { center: image.windowCenter, width: image.windowWidth };
  }
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < pixels.length; i++) {
    const v = pixels[i]!;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  if (!(max > min)) return { center: min, width: 0 };
  // A window of width max-min+1 centred so that min maps to 0 and max to 255.
  return { center: (min + max + 1) / 2, width: max - min + 1 };
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

function axis(inSize: number, outSize: number): { i0: Int32Array; i1: Int32Array; f: Float32Array } {
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
