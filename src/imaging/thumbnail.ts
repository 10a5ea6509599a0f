// A small display rendering of one image for the console: first frame, the file's window (else min-max),
// MONOCHROME1 shown as a reader sees it, area-averaged down to at most `maxSide` pixels, PNG. Pixels only:
// nothing from the header travels with it.
import { decodeImage, type DecodedImage } from './decode.ts';
import { encodePng } from './png.ts';

export const THUMBNAIL_MAX_SIDE = 256;

export interface Thumbnail {
  png: Buffer;
  rows: number;
  columns: number;
}

/** Display values 0-255 of a decoded frame (the first by default), grey (1 channel) or RGB (3). */
export function display(image: DecodedImage, frame = 0): { data: Uint8Array; channels: 1 | 3 } {
  const pixels = image.pixels[frame];
  if (!pixels) throw new RangeError('no decoded frame');
  const out = new Uint8Array(pixels.length);
  if (image.samplesPerPixel === 3) {
    const max = 2 ** Math.max(8, image.bitsStored) - 1;
    for (let i = 0; i < pixels.length; i++) out[i] = Math.max(0, Math.min(255, (pixels[i]! * 255) / max));
    return { data: out, channels: 3 };
  }
  let center = image.windowCenter;
  let width = image.windowWidth;
  if (center === undefined || width === undefined || !(width > 0)) {
    let min = Infinity;
    let max = -Infinity;
    for (const v of pixels) {
      if (v < min) min = v;
      if (v > max) max = v;
    }
    center = (min + max) / 2;
    width = Math.max(max - min, 1);
  }
  const low = center - width / 2;
  const invert = image.photometric === 'MONOCHROME1';
  for (let i = 0; i < pixels.length; i++) {
    const y = Math.max(0, Math.min(255, Math.round(((pixels[i]! - low) / width) * 255)));
    out[i] = invert ? 255 - y : y;
  }
  return { data: out, channels: 1 };
}

/** Area average of `channels`-sample pixels down to outRows × outColumns. */
export function shrink(
  src: Uint8Array,
  rows: number,
  columns: number,
  channels: number,
  outRows: number,
  outColumns: number,
): Uint8Array {
  const out = new Uint8Array(outRows * outColumns * channels);
  for (let y = 0; y < outRows; y++) {
    const y0 = Math.floor((y * rows) / outRows);
    const y1 = Math.max(y0 + 1, Math.floor(((y + 1) * rows) / outRows));
    for (let x = 0; x < outColumns; x++) {
      const x0 = Math.floor((x * columns) / outColumns);
      const x1 = Math.max(x0 + 1, Math.floor(((x + 1) * columns) / outColumns));
      for (let c = 0; c < channels; c++) {
        let sum = 0;
        for (let yy = y0; yy < y1; yy++)
          for (let xx = x0; xx < x1; xx++) sum += src[(yy * columns + xx) * channels + c]!;
        out[(y * outColumns + x) * channels + c] = Math.round(sum / ((y1 - y0) * (x1 - x0)));
      }
    }
  }
  return out;
}

/** The thumbnail of a decoded image (first frame), at most maxSide pixels on its longer side. */
export function thumbnailOf(image: DecodedImage, maxSide = THUMBNAIL_MAX_SIDE): Thumbnail {
  const { data, channels } = display(image);
  const scale = Math.min(1, maxSide / Math.max(image.rows, image.columns));
  const rows = Math.max(1, Math.round(image.rows * scale));
  const columns = Math.max(1, Math.round(image.columns * scale));
  const small = shrink(data, image.rows, image.columns, channels, rows, columns);
  return { png: encodePng(small, columns, rows, channels), rows, columns };
}

/** Decodes the file's first frame (within the decode limits) and renders its thumbnail. */
export async function renderThumbnail(file: string, maxSide = THUMBNAIL_MAX_SIDE): Promise<Thumbnail> {
  return thumbnailOf(await decodeImage(file, { frames: 'first' }), maxSide);
}
