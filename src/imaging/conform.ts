import { apply, invert, minMax, multiply, voxelCount, type Affine, type Volume } from './volume.ts';

// "Conform" as FreeSurfer's mri_convert --conform does it: resample into a fixed grid (e.g. 256³ at 1 mm)
// whose axes point along a fixed orientation (e.g. LIA) and whose centre voxel (N/2) lies at the centre of
// the source volume. Trilinear; outside the source is 0.

export interface ConformSpec {
  shape: [number, number, number];
  spacingMm: number;
  /** Three letters, the direction each voxel axis increases towards: R/L, A/P, S/I (e.g. 'LIA'). */
  orientation: string;
}

const DIRECTIONS: Record<string, [number, number, number]> = {
  R: [1, 0, 0],
  L: [-1, 0, 0],
  A: [0, 1, 0],
  P: [0, -1, 0],
  S: [0, 0, 1],
  I: [0, 0, -1],
};

/** A three-letter orientation with each of the three anatomical axes once. */
export function isOrientationCode(code: string): boolean {
  if (!/^[RLAPSI]{3}$/.test(code)) return false;
  const axes = new Set([...code].map((ch) => DIRECTIONS[ch]!.findIndex((v) => v !== 0)));
  return axes.size === 3;
}

/** The conformed grid's affine, centred at `centre` (RAS mm). */
export function conformedAffine(spec: ConformSpec, centre: [number, number, number]): Affine {
  if (!isOrientationCode(spec.orientation))
    throw new RangeError(`orientation '${spec.orientation}' is invalid`);
  const m = new Float64Array(16);
  for (let axis = 0; axis < 3; axis++) {
    const dir = DIRECTIONS[spec.orientation[axis]!]!;
    for (let r = 0; r < 3; r++) m[r * 4 + axis] = dir[r]! * spec.spacingMm;
  }
  // FreeSurfer: P0 = c_ras - Mdc·D·N/2, so voxel N/2 lands on the centre.
  for (let r = 0; r < 3; r++) {
    let offset = 0;
    for (let axis = 0; axis < 3; axis++) offset += m[r * 4 + axis]! * (spec.shape[axis]! / 2);
    m[r * 4 + 3] = centre[r]! - offset;
  }
  m[15] = 1;
  return m;
}

/** Centre of a volume as FreeSurfer defines it (c_ras): the world position of voxel dims/2. */
export function volumeCentre(v: Volume): [number, number, number] {
  return apply(v.affine, v.dims[0] / 2, v.dims[1] / 2, v.dims[2] / 2);
}

/** Source voxel coordinates this close to an integer are taken as the integer, so that a grid that
 * already is the target grid (a conformed NIfTI) is copied exactly instead of blurred by rounding error. */
const SNAP = 1e-4;

function snap(x: number): number {
  const r = Math.round(x);
  return Math.abs(x - r) < SNAP ? r : x;
}

export function conform(source: Volume, spec: ConformSpec): Volume {
  const affine = conformedAffine(spec, volumeCentre(source));
  return { dims: [...spec.shape], data: resampleTrilinear(source, affine, spec.shape), affine };
}

/** Samples `source` at every voxel of the target grid (target affine, target dims). */
export function resampleTrilinear(
  source: Volume,
  target: Affine,
  dims: [number, number, number],
): Float32Array {
  const m = multiply(invert(source.affine), target); // target voxel → source voxel
  const [nx, ny, nz] = source.dims;
  const src = source.data;
  const out = new Float32Array(voxelCount(dims));
  const sliceSize = nx * ny;
  let n = 0;
  for (let k = 0; k < dims[2]; k++) {
    for (let j = 0; j < dims[1]; j++) {
      // Row start in source coordinates; stepping i adds column 0 of m.
      const bx = m[1]! * j + m[2]! * k + m[3]!;
      const by = m[5]! * j + m[6]! * k + m[7]!;
      const bz = m[9]! * j + m[10]! * k + m[11]!;
      for (let i = 0; i < dims[0]; i++, n++) {
        const x = snap(bx + m[0]! * i);
        const y = snap(by + m[4]! * i);
        const z = snap(bz + m[8]! * i);
        if (x < 0 || y < 0 || z < 0 || x > nx - 1 || y > ny - 1 || z > nz - 1) continue;
        const x0 = Math.floor(x);
        const y0 = Math.floor(y);
        const z0 = Math.floor(z);
        const fx = x - x0;
        const fy = y - y0;
        const fz = z - z0;
        const base = z0 * sliceSize + y0 * nx + x0;
        if (fx === 0 && fy === 0 && fz === 0) {
          out[n] = src[base]!;
          continue;
        }
        const x1 = x0 < nx - 1 ? 1 : 0;
        const y1 = y0 < ny - 1 ? nx : 0;
        const z1 = z0 < nz - 1 ? sliceSize : 0;
        const c00 = src[base]! + (src[base + x1]! - src[base]!) * fx;
        const c10 = src[base + y1]! + (src[base + y1 + x1]! - src[base + y1]!) * fx;
        const c01 = src[base + z1]! + (src[base + z1 + x1]! - src[base + z1]!) * fx;
        const c11 = src[base + z1 + y1]! + (src[base + z1 + y1 + x1]! - src[base + z1 + y1]!) * fx;
        const c0 = c00 + (c10 - c00) * fy;
        const c1 = c01 + (c11 - c01) * fy;
        out[n] = c0 + (c1 - c0) * fz;
      }
    }
  }
  return out;
}

/** Min–max scaling to [0, 1] over the whole volume, in place; a constant volume becomes all zeros. */
export function scaleMinMax(data: Float32Array): void {
  const { min, max } = minMax(data);
  const range = max - min;
  if (!(range > 0)) {
    data.fill(0);
    return;
  }
  for (let n = 0; n < data.length; n++) data[n] = (data[n]! - min) / range;
}

/** From file order (i fastest) to C order [i][j][k] (k fastest), which the 'transposed' models take. */
export function transpose(data: Float32Array, dims: [number, number, number]): Float32Array {
  const [nx, ny, nz] = dims;
  const out = new Float32Array(data.length);
  let n = 0;
  for (let k = 0; k < nz; k++)
    for (let j = 0; j < ny; j++) for (let i = 0; i < nx; i++, n++) out[(i * ny + j) * nz + k] = data[n]!;
  return out;
}

/** The inverse of transpose: from C order back to file order (i fastest), for any element type. */
export function untranspose<T extends Float32Array | Uint8Array>(data: T, dims: [number, number, number]): T {
  const [nx, ny, nz] = dims;
  const out = new (data.constructor as new (length: number) => T)(data.length);
  let n = 0;
  for (let k = 0; k < nz; k++)
    for (let j = 0; j < ny; j++) for (let i = 0; i < nx; i++, n++) out[n] = data[(i * ny + j) * nz + k]!;
  return out;
}
