import { readFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';
import type { Affine, Volume } from './volume.ts';

// NIfTI-1 reader (.nii / .nii.gz, single file, scalar 3-D). Hand-written on node's zlib: the NIfTI-1
// header is a fixed 348-byte struct, so a parser is ~100 lines and needs no dependency. It is used to read
// reference volumes (the brain model's MODEL.md sample), not network input, but it still checks sizes.

export class NiftiError extends Error {
  override name = 'NiftiError';
}

/** NIfTI datatype code → bytes per voxel and reader. */
const DATATYPES: Record<number, { bytes: number; read: (v: DataView, o: number, le: boolean) => number }> = {
  2: { bytes: 1, read: (v, o) => v.getUint8(o) },
  4: { bytes: 2, read: (v, o, le) => v.getInt16(o, le) },
  8: { bytes: 4, read: (v, o, le) => v.getInt32(o, le) },
  16: { bytes: 4, read: (v, o, le) => v.getFloat32(o, le) },
  64: { bytes: 8, read: (v, o, le) => v.getFloat64(o, le) },
  256: { bytes: 1, read: (v, o) => v.getInt8(o) },
  512: { bytes: 2, read: (v, o, le) => v.getUint16(o, le) },
  768: { bytes: 4, read: (v, o, le) => v.getUint32(o, le) },
};

const MAX_VOXELS = 512 * 512 * 512;

export async function readNifti(file: string): Promise<Volume> {
  let bytes: Buffer = await readFile(file);
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) {
    bytes = gunzipSync(bytes, { maxOutputLength: MAX_VOXELS * 8 + 1024 * 1024 });
  }
  return parseNifti(bytes);
}

export function parseNifti(bytes: Uint8Array): Volume {
  if (bytes.byteLength < 352) throw new NiftiError('too short for a NIfTI-1 header');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const le = view.getInt32(0, true) === 348;
  if (!le && view.getInt32(0, false) !== 348) throw new NiftiError('sizeof_hdr is not 348: not NIfTI-1');
  const magic = String.fromCharCode(...bytes.subarray(344, 347));
  if (magic !== 'n+1') throw new NiftiError(`magic '${magic}' is not a single-file NIfTI-1 ('n+1')`);

  const ndim = view.getInt16(40, le);
  const dims: [number, number, number] = [
    view.getInt16(42, le),
    view.getInt16(44, le),
    view.getInt16(46, le),
  ];
  for (let d = 4; d <= ndim && d <= 7; d++) {
    if (view.getInt16(40 + 2 * d, le) > 1) throw new NiftiError('only 3-D scalar volumes are supported');
  }
  if (ndim < 3 || dims.some((d) => d < 1)) throw new NiftiError(`dimensions ${dims.join('×')} are invalid`);
  const count = dims[0] * dims[1] * dims[2];
  if (count > MAX_VOXELS) throw new NiftiError(`${count} voxels is over the ${MAX_VOXELS} limit`);

  const datatype = view.getInt16(70, le);
  const type = DATATYPES[datatype];
  if (!type) throw new NiftiError(`datatype ${datatype} is not supported`);
  const offset = Math.floor(view.getFloat32(108, le));
  if (offset < 352 || offset + count * type.bytes > bytes.byteLength) {
    throw new NiftiError('the voxel data runs past the end of the file');
  }
  let slope = view.getFloat32(112, le);
  const rawIntercept = view.getFloat32(116, le);
  const intercept = Number.isFinite(rawIntercept) ? rawIntercept : 0;
  if (!Number.isFinite(slope) || slope === 0) slope = 1; // NIfTI-1: scl_slope 0 means no scaling
  const data = new Float32Array(count);
  for (let n = 0; n < count; n++) data[n] = type.read(view, offset + n * type.bytes, le) * slope + intercept;
  return { dims, data, affine: headerAffine(view, le) };
}

/** sform when set (its code > 0), else qform, else the pixdim-only fallback ("method 1"). */
function headerAffine(view: DataView, le: boolean): Affine {
  const pixdim = Array.from({ length: 4 }, (_, i) => view.getFloat32(76 + 4 * i, le));
  const sformCode = view.getInt16(254, le);
  const qformCode = view.getInt16(252, le);
  const m = new Float64Array(16);
  m[15] = 1;
  if (sformCode > 0) {
    for (let r = 0; r < 3; r++)
      for (let c = 0; c < 4; c++) m[r * 4 + c] = view.getFloat32(280 + 16 * r + 4 * c, le);
    return m;
  }
  const [dx, dy, dz] = [pixdim[1]!, pixdim[2]!, pixdim[3]!];
  if (qformCode > 0) {
    // NIfTI-1 quaternion → rotation (nifti1.h, "method 2").
    const b = view.getFloat32(256, le);
    const c = view.getFloat32(260, le);
    const d = view.getFloat32(264, le);
    const a = Math.sqrt(Math.max(0, 1 - (b * b + c * c + d * d)));
    const qfac = pixdim[0]! < 0 ? -1 : 1;
    const R = [
      [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
      [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
      [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
    ];
    const scale = [dx, dy, dz * qfac];
    for (let r = 0; r < 3; r++) for (let c2 = 0; c2 < 3; c2++) m[r * 4 + c2] = R[r]![c2]! * scale[c2]!;
    m[3] = view.getFloat32(268, le);
    m[7] = view.getFloat32(272, le);
    m[11] = view.getFloat32(276, le);
    return m;
  }
  m[0] = dx;
  m[5] = dy;
  m[10] = dz;
  return m;
}
