import assert from 'node:assert/strict';
import { inflateSync } from 'node:zlib';

/** Pixels of an 8-bit RGB PNG as the gateway writes it (src/imaging/png.ts: filter 0 on every row). */
export function rgbPngPixels(png: Buffer): { width: number; height: number; rgb: Uint8Array } {
  assert.equal(png.subarray(1, 4).toString('latin1'), 'PNG');
  assert.equal(png[25], 2, 'an RGB PNG');
  const width = png.readUInt32BE(16);
  const height = png.readUInt32BE(20);
  const idat: Buffer[] = [];
  for (let at = 8; at < png.length;) {
    const len = png.readUInt32BE(at);
    if (png.toString('latin1', at + 4, at + 8) === 'IDAT') idat.push(png.subarray(at + 8, at + 8 + len));
    at += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    assert.equal(raw[y * (width * 3 + 1)], 0, 'filter type 0');
    rgb.set(raw.subarray(y * (width * 3 + 1) + 1, (y + 1) * (width * 3 + 1)), y * width * 3);
  }
  return { width, height, rgb };
}
