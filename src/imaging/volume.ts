// A 3-D scalar volume in world space. Voxel (i, j, k) lies at `affine · [i, j, k, 1]` in patient RAS
// millimetres (the NIfTI convention; DICOM's LPS is converted when a series is assembled). Data is laid
// out with i fastest: data[(k * dims[1] + j) * dims[0] + i], i.e. NIfTI file order, or stacked DICOM
// slices [slice][row][column] with i = column, j = row, k = slice.

/** Row-major 4×4 matrix. */
export type Affine = Float64Array;

export interface Volume {
  dims: [number, number, number];
  data: Float32Array;
  /** voxel index → RAS mm */
  affine: Affine;
}

export function voxelCount(dims: readonly number[]): number {
  return dims[0]! * dims[1]! * dims[2]!;
}

/** Voxel size (mm) along each axis: the length of each affine column. */
export function voxelSpacing(affine: Affine): [number, number, number] {
  const col = (c: number) => Math.hypot(affine[c]!, affine[4 + c]!, affine[8 + c]!);
  return [col(0), col(1), col(2)];
}

export function multiply(a: Affine, b: Affine): Affine {
  const out = new Float64Array(16);
  for (let r = 0; r < 4; r++) {
    for (let c = 0; c < 4; c++) {
      let s = 0;
      for (let k = 0; k < 4; k++) s += a[r * 4 + k]! * b[k * 4 + c]!;
      out[r * 4 + c] = s;
    }
  }
  return out;
}

/** Inverse of an affine (last row 0 0 0 1); throws for a singular (degenerate) geometry. */
export function invert(m: Affine): Affine {
  const [a, b, c, d, e, f, g, h, i] = [m[0]!, m[1]!, m[2]!, m[4]!, m[5]!, m[6]!, m[8]!, m[9]!, m[10]!];
  const det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g);
  if (!Number.isFinite(det) || Math.abs(det) < 1e-12)
    throw new RangeError('the volume geometry is degenerate');
  const r = [
    (e * i - f * h) / det,
    (c * h - b * i) / det,
    (b * f - c * e) / det,
    (f * g - d * i) / det,
    (a * i - c * g) / det,
    (c * d - a * f) / det,
    (d * h - e * g) / det,
    (b * g - a * h) / det,
    (a * e - b * d) / det,
  ];
  const t = [m[3]!, m[7]!, m[11]!];
  const out = new Float64Array(16);
  for (let row = 0; row < 3; row++) {
    out[row * 4] = r[row * 3]!;
    out[row * 4 + 1] = r[row * 3 + 1]!;
    out[row * 4 + 2] = r[row * 3 + 2]!;
    out[row * 4 + 3] = -(r[row * 3]! * t[0]! + r[row * 3 + 1]! * t[1]! + r[row * 3 + 2]! * t[2]!);
  }
  out[15] = 1;
  return out;
}

export function apply(m: Affine, x: number, y: number, z: number): [number, number, number] {
  return [
    m[0]! * x + m[1]! * y + m[2]! * z + m[3]!,
    m[4]! * x + m[5]! * y + m[6]! * z + m[7]!,
    m[8]! * x + m[9]! * y + m[10]! * z + m[11]!,
  ];
}

/** Smallest and largest value of a sample array (Infinity/-Infinity when empty). */
export function minMax(values: Float32Array): { min: number; max: number } {
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { min, max };
}
