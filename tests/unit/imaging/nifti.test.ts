import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { NiftiError, parseNifti, readNifti } from '../../../src/imaging/nifti.ts';
import { apply } from '../../../src/imaging/volume.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const SAMPLE = path.resolve(repoRoot, '../shared/models/meshnet-brain-gwm/sample/t1_crop.nii.gz');

interface Options {
  littleEndian?: boolean;
  datatype?: number;
  values: number[];
  dims: [number, number, number];
  sform?: number[][];
  quatern?: { b: number; c: number; d: number; qfac: number; offset: [number, number, number] };
  slope?: number;
  intercept?: number;
}

/** A single-file NIfTI-1 image written field by field from nifti1.h offsets. */
function nifti(o: Options): Buffer {
  const le = o.littleEndian ?? true;
  const bytesPer = { 2: 1, 4: 2, 16: 4 }[o.datatype ?? 4]!;
  const buf = Buffer.alloc(352 + o.values.length * bytesPer);
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  v.setInt32(0, 348, le);
  [3, ...o.dims, 1, 1, 1, 1].forEach((d, i) => v.setInt16(40 + 2 * i, d, le));
  v.setInt16(70, o.datatype ?? 4, le);
  v.setInt16(72, bytesPer * 8, le);
  [o.quatern?.qfac ?? 1, 2, 3, 4].forEach((p, i) => v.setFloat32(76 + 4 * i, p, le));
  v.setFloat32(108, 352, le);
  v.setFloat32(112, o.slope ?? 0, le);
  v.setFloat32(116, o.intercept ?? 0, le);
  if (o.sform) {
    v.setInt16(254, 1, le);
    o.sform.forEach((row, r) => row.forEach((x, c) => v.setFloat32(280 + 16 * r + 4 * c, x, le)));
  }
  if (o.quatern) {
    v.setInt16(252, 1, le);
    [o.quatern.b, o.quatern.c, o.quatern.d, ...o.quatern.offset].forEach((x, i) =>
      v.setFloat32(256 + 4 * i, x, le),
    );
  }
  buf.write('n+1\0', 344, 'latin1');
  o.values.forEach((x, i) => {
    if (bytesPer === 1) v.setUint8(352 + i, x);
    else if (bytesPer === 2) v.setInt16(352 + 2 * i, x, le);
    else v.setFloat32(352 + 4 * i, x, le);
  });
  return buf;
}

test('voxels in file order with scl_slope/inter, sform affine', () => {
  const sform = [
    [-1, 0, 0, 90],
    [0, 0, 1, -120],
    [0, -1, 0, 100],
  ];
  const vol = parseNifti(
    nifti({ values: [1, -2, 3, 4, 5, 6], dims: [3, 2, 1], sform, slope: 2, intercept: 1 }),
  );
  assert.deepEqual(vol.dims, [3, 2, 1]);
  assert.deepEqual(Array.from(vol.data), [3, -3, 7, 9, 11, 13]);
  assert.deepEqual(apply(vol.affine, 1, 2, 3), [89, -117, 98]);
});

test('big endian, qform quaternion with qfac -1, no scaling when scl_slope is 0', () => {
  // b=0,c=0,d=1: 180° about z, so x and y flip; qfac -1 flips k. Pixdim 2, 3, 4.
  const vol = parseNifti(
    nifti({
      littleEndian: false,
      values: [7, 8],
      dims: [1, 1, 2],
      quatern: { b: 0, c: 0, d: 1, qfac: -1, offset: [10, 20, 30] },
    }),
  );
  assert.deepEqual(Array.from(vol.data), [7, 8]);
  const [x, y, z] = apply(vol.affine, 1, 1, 1);
  assert.ok(Math.abs(x - 8) < 1e-6 && Math.abs(y - 17) < 1e-6 && Math.abs(z - 26) < 1e-6, `${x},${y},${z}`);
});

test('gzip files are read; bad headers are refused with a reason', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'nifti-'));
  try {
    const file = path.join(dir, 'v.nii.gz');
    await writeFile(file, gzipSync(nifti({ datatype: 2, values: [0, 255], dims: [2, 1, 1] })));
    assert.deepEqual(Array.from((await readNifti(file)).data), [0, 255]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const good = nifti({ values: [1, 2], dims: [2, 1, 1] });
  const refuse = (bytes: Buffer, pattern: RegExp) =>
    assert.throws(
      () => parseNifti(bytes),
      (e: unknown) => e instanceof NiftiError && pattern.test(e.message),
    );
  refuse(good.subarray(0, 100), /too short/);
  refuse(Buffer.concat([Buffer.from([0, 0, 0, 0]), good.subarray(4)]), /sizeof_hdr/);
  refuse(good.subarray(0, 353), /past the end/);
  const badType = Buffer.from(good);
  badType.writeInt16LE(128, 70); // RGB24
  refuse(badType, /datatype 128/);
  const fourD = Buffer.from(good);
  fourD.writeInt16LE(4, 40);
  fourD.writeInt16LE(3, 48);
  refuse(fourD, /3-D scalar/);
});

test('the brain model sample: 256³ uint8, 1 mm, conformed LIA', async () => {
  const vol = await readNifti(SAMPLE);
  assert.deepEqual(vol.dims, [256, 256, 256]);
  const o = apply(vol.affine, 0, 0, 0);
  const step = (i: number, j: number, k: number) =>
    apply(vol.affine, i, j, k).map((v, a) => Math.round(v - o[a]!));
  assert.deepEqual(step(1, 0, 0), [-1, 0, 0]); // L
  assert.deepEqual(step(0, 1, 0), [0, 0, -1]); // I
  assert.deepEqual(step(0, 0, 1), [0, 1, 0]); // A
  let max = 0;
  for (const v of vol.data) max = Math.max(max, v);
  assert.ok(max <= 255 && max > 100 && vol.data.every((v) => Number.isInteger(v)));
});
