import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { SliceGeometry } from '../../../src/imaging/decode.ts';
import {
  conform,
  conformedAffine,
  isOrientationCode,
  resampleTrilinear,
  scaleMinMax,
  transpose,
  untranspose,
} from '../../../src/imaging/conform.ts';
import { labelsOnSlices } from '../../../src/inference/run-volume.ts';
import { assembleVolume, SeriesGeometryError, type VolumeSlice } from '../../../src/imaging/series-volume.ts';
import { apply, invert, multiply, type Volume } from '../../../src/imaging/volume.ts';

/** An axial 2×3 slice at height z (LPS), filled with `value`; tilt shifts it along y. */
function axial(z: number, value: number, tilt = 0): VolumeSlice {
  const geometry: SliceGeometry = {
    position: [-10, -20 + tilt * z, z],
    orientation: [1, 0, 0, 0, 1, 0],
    pixelSpacing: [0.5, 0.7],
  };
  return { rows: 2, columns: 3, pixels: new Float32Array(6).fill(value), geometry };
}

test('slices are sorted along the normal, spacing comes from the positions', () => {
  // Shuffled, and nothing here claims a thickness: the 2.5 mm step is only in the positions.
  const zs = [5, -2.5, 0, 2.5];
  const { volume, order, sliceSpacingMm } = assembleVolume(zs.map((z) => axial(z, z)));
  assert.deepEqual(order, [1, 2, 3, 0]);
  assert.equal(sliceSpacingMm, 2.5);
  assert.deepEqual(volume.dims, [3, 2, 4]);
  // Stacked in order: slice k holds the value of the k-th lowest z.
  assert.deepEqual(
    [0, 6, 12, 18].map((o) => volume.data[o]),
    [-2.5, 0, 2.5, 5],
  );
  // voxel → RAS: column i along +x LPS (= -x RAS) at 0.7 mm, row j along +y LPS at 0.5 mm, k up 2.5 mm.
  assert.deepEqual(apply(volume.affine, 0, 0, 0), [10, 20, -2.5]);
  assert.deepEqual(apply(volume.affine, 1, 0, 0), [10 - 0.7, 20, -2.5]);
  assert.deepEqual(apply(volume.affine, 0, 1, 0), [10, 20 - 0.5, -2.5]);
  assert.deepEqual(apply(volume.affine, 0, 0, 1), [10, 20, 0]);
});

test('a gantry tilt is kept as a shear of the slice axis', () => {
  const { volume } = assembleVolume([0, 2, 4].map((z) => axial(z, 1, 0.25)));
  assert.deepEqual(apply(volume.affine, 0, 0, 2), [10, 20 - 1, 4]);
});

test('geometry problems are refused with a reason', () => {
  const refuse = (slices: VolumeSlice[], pattern: RegExp) =>
    assert.throws(
      () => assembleVolume(slices),
      (e: unknown) => e instanceof SeriesGeometryError && pattern.test(e.message),
    );
  refuse([axial(0, 1)], /at least 2 slices/);
  refuse([axial(0, 1), axial(0, 2)], /share one position/);
  refuse([axial(0, 1), axial(2, 1), axial(4, 1), axial(10, 1)], /unevenly spaced/);
  refuse([axial(0, 1), { ...axial(2, 1), geometry: undefined }], /slice 2 has no Image Position/);
  const rotated = axial(2, 1);
  rotated.geometry!.orientation = [0, 1, 0, 0, 0, -1];
  refuse([axial(0, 1), rotated], /different Image Orientation/);
  refuse([axial(0, 1), { ...axial(2, 1), rows: 3, pixels: new Float32Array(9) }], /is 3×3/);
  assert.throws(() => assembleVolume([axial(0, 1), axial(2, 1), axial(4, 1)], 5), /at least 5 slices/);
});

test('orientation codes: one letter per anatomical axis', () => {
  assert.ok(isOrientationCode('LIA'));
  assert.ok(isOrientationCode('RAS'));
  assert.ok(!isOrientationCode('LRA'));
  assert.ok(!isOrientationCode('LI'));
  assert.ok(!isOrientationCode('XYZ'));
});

test('conformed grid: LIA axes, voxel N/2 at the centre (FreeSurfer c_ras)', () => {
  const a = conformedAffine({ shape: [256, 256, 256], spacingMm: 1, orientation: 'LIA' }, [1, 2, 3]);
  assert.deepEqual(apply(a, 128, 128, 128), [1, 2, 3]);
  assert.deepEqual(apply(a, 129, 128, 128), [0, 2, 3]); // i → Left
  assert.deepEqual(apply(a, 128, 129, 128), [1, 2, 2]); // j → Inferior
  assert.deepEqual(apply(a, 128, 128, 129), [1, 3, 3]); // k → Anterior
});

test('conform of a volume already on the target grid is an exact copy', () => {
  const spec = { shape: [8, 8, 8] as [number, number, number], spacingMm: 1, orientation: 'LIA' };
  const affine = conformedAffine(spec, [0.3, -7.1, 12.9]);
  const data = Float32Array.from({ length: 512 }, (_, n) => (n * 7919) % 255);
  const out = conform({ dims: [8, 8, 8], data, affine }, spec);
  assert.deepEqual(out.data, data);
});

test('trilinear resampling interpolates and leaves outside voxels at 0', () => {
  // A 2×1×1 source with values 0 and 10 along x, sampled at half-voxel steps.
  const source: Volume = { dims: [2, 1, 1], data: Float32Array.from([0, 10]), affine: diag(1) };
  const target = diag(0.5);
  const out = resampleTrilinear(source, target, [4, 1, 1]);
  assert.deepEqual(Array.from(out), [0, 5, 10, 0]);
});

test('min-max scaling and transposition', () => {
  const data = Float32Array.from([2, 4, 6, 10]);
  scaleMinMax(data);
  assert.deepEqual(Array.from(data), [0, 0.25, 0.5, 1]);
  // dims [2,1,2]: file order (i fastest) → C order [i][j][k].
  assert.deepEqual(Array.from(transpose(Float32Array.from([1, 2, 3, 4]), [2, 1, 2])), [1, 3, 2, 4]);
  // And back, for a 'transposed' model's label map (any element type).
  const labels = Uint8Array.from({ length: 24 }, (_, n) => n);
  const back = untranspose(Uint8Array.from(transpose(Float32Array.from(labels), [2, 3, 4])), [2, 3, 4]);
  assert.ok(back instanceof Uint8Array);
  assert.deepEqual(back, labels);
});

test('a label map goes back onto the source slices by nearest neighbour', () => {
  // Source: 2 axial slices 2 mm apart, 2×3 pixels; the conformed grid is 1 mm RAS around it.
  const { volume } = assembleVolume([axial(0, 1), axial(2, 1)]);
  const gridAffine = conformedAffine({ shape: [16, 16, 16], spacingMm: 1, orientation: 'RAS' }, [8, 18, 1]);
  const labels = new Uint8Array(16 ** 3);
  // Label every grid voxel with its own k (superior-inferior position) + 1.
  for (let k = 0; k < 16; k++) labels.fill(k + 1, k * 256, (k + 1) * 256);
  const slices = labelsOnSlices(
    { labels, grid: { dims: [16, 16, 16], affine: gridAffine }, counts: [], voxelVolumeMm3: 1 },
    volume,
  );
  assert.equal(slices.length, 2);
  const toGrid = multiply(invert(gridAffine), volume.affine);
  for (const [k, slice] of slices.entries()) {
    const expected = Math.round(apply(toGrid, 0, 0, k)[2]) + 1;
    assert.ok(
      slice.every((v) => v === expected),
      `slice ${k}: ${Array.from(slice)} vs ${expected}`,
    );
  }
  assert.notEqual(slices[0]![0], slices[1]![0]);
});

function diag(s: number): Float64Array {
  return Float64Array.from([s, 0, 0, 0, 0, s, 0, 0, 0, 0, s, 0, 0, 0, 0, 1]);
}
