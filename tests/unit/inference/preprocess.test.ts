import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DecodedImage } from '../../../src/imaging/decode.ts';
import {
  preprocess,
  resizeBilinear,
  toDisplay,
  type PreprocessSpec,
} from '../../../src/inference/preprocess.ts';

function image(
  values: number[],
  rows: number,
  columns: number,
  extra: Partial<DecodedImage> = {},
): DecodedImage {
  return {
    transferSyntaxUid: '1.2.840.10008.1.2.1',
    rows,
    columns,
    frames: 1,
    samplesPerPixel: 1,
    photometric: 'MONOCHROME2',
    bitsAllocated: 16,
    bitsStored: 12,
    highBit: 11,
    pixelRepresentation: 0,
    planarConfiguration: 0,
    pixels: [Float32Array.from(values)],
    modalityLutApplied: true,
    rescaleSlope: 1,
    rescaleIntercept: 0,
    ...extra,
  };
}

test('linear VOI window (PS3.3 C.11.2.1.2) to 8 bits, MONOCHROME1 inverted', () => {
  // center 100, width 101: 49.5 and below → 0, above 149.5 → 255, 99.5 → mid-grey.
  const img = image([0, 50, 99.5, 150, 151, 1000], 1, 6);
  const window = { center: 100, width: 101 };
  assert.deepEqual(Array.from(toDisplay(img, window, true).data), [0, 1, 128, 255, 255, 255]);
  const mono1 = { ...img, photometric: 'MONOCHROME1' };
  assert.deepEqual(Array.from(toDisplay(mono1, window, true).data), [255, 254, 127, 0, 0, 0]);
  assert.deepEqual(Array.from(toDisplay(mono1, window, false).data), [0, 1, 128, 255, 255, 255]);
});

test("window 'file' uses the file's window, else min/max; a flat image maps to black", () => {
  const img = image([10, 20, 30], 1, 3, { windowCenter: 20, windowWidth: 2 });
  assert.deepEqual(Array.from(toDisplay(img, 'file', true).data), [0, 255, 255]);
  assert.deepEqual(Array.from(toDisplay(img, 'minmax', true).data), [0, 128, 255]);
  const noWindow = image([10, 20, 30], 1, 3);
  assert.deepEqual(Array.from(toDisplay(noWindow, 'file', true).data), [0, 128, 255]);
  assert.deepEqual(Array.from(toDisplay(image([7, 7], 1, 2), 'minmax', true).data), [0, 0]);
});

test('bilinear resize uses half-pixel centres (align_corners=false)', () => {
  const src = { data: Float32Array.from([0, 10, 20, 30]), rows: 2, columns: 2, channels: 1 as const };
  // 2×2 → 4×4: output centres at -0.25, 0.25, 0.75, 1.25 in source pixels, clamped at the edges.
  const up = resizeBilinear(src, 4, 4);
  assert.deepEqual(Array.from(up.data.slice(0, 4)), [0, 2.5, 7.5, 10]);
  assert.deepEqual(Array.from(up.data.slice(12, 16)), [20, 22.5, 27.5, 30]);
  // 4 → 2 on one row: centres at 0.5 and 2.5, the mean of each pair.
  const row = { data: Float32Array.from([0, 10, 20, 30]), rows: 1, columns: 4, channels: 1 as const };
  assert.deepEqual(Array.from(resizeBilinear(row, 1, 2).data), [5, 25]);
});

test('grey to three channels, scale and per-channel mean/std, NCHW', () => {
  const spec: PreprocessSpec = {
    input: { name: 'input', layout: 'NCHW', channels: 3, height: 1, width: 2, dtype: 'float32' },
    preprocessing: {
      modalityLut: true,
      window: { center: 128, width: 256 },
      invertMonochrome1: true,
      resize: 'bilinear',
      scale: 1 / 255,
      mean: [0, 0.5, 1],
      std: [1, 0.5, 2],
    },
  };
  const out = preprocess(image([0, 255], 1, 2), spec);
  const expected = [0, 1, -1, 1, -0.5, 0];
  assert.equal(out.length, 6);
  out.forEach((v, i) => assert.ok(Math.abs(v - expected[i]!) < 1e-6, `${i}: ${v} vs ${expected[i]}`));
});
