import type { SliceGeometry } from './decode.ts';
import type { Affine, Volume } from './volume.ts';

// A series of single-frame slices → one volume. Slices are ordered along the slice normal (row × column
// direction of Image Orientation), by the projection of Image Position on it; the step between slices
// comes from those positions, never from Slice Thickness or Spacing Between Slices (a 4 mm slice taken
// every 4.8 mm is 4.8 mm apart). Instance Number plays no part: scanners number slices in any order.

export class SeriesGeometryError extends Error {
  override name = 'SeriesGeometryError';
}

export interface VolumeSlice {
  rows: number;
  columns: number;
  /** rows × columns values, row by row. */
  pixels: Float32Array;
  geometry?: SliceGeometry;
}

export interface AssembledVolume {
  volume: Volume;
  /** order[k] = index into the input of the slice at volume position k. */
  order: number[];
  /** Distance between neighbouring slices along the normal (mm), from the positions. */
  sliceSpacingMm: number;
}

/** Relative tolerance for "the same orientation / spacing" and for evenly spaced slices. */
const ORIENTATION_TOLERANCE = 1e-3;
const SPACING_TOLERANCE = 0.05;

export function sliceNormal(o: SliceGeometry['orientation']): [number, number, number] {
  const n: [number, number, number] = [
    o[1] * o[5] - o[2] * o[4],
    o[2] * o[3] - o[0] * o[5],
    o[0] * o[4] - o[1] * o[3],
  ];
  const len = Math.hypot(...n);
  if (!(len > 0.5))
    throw new SeriesGeometryError('Image Orientation (Patient) is not two orthogonal unit vectors');
  return [n[0] / len, n[1] / len, n[2] / len];
}

export function assembleVolume(slices: VolumeSlice[], minSlices = 2): AssembledVolume {
  if (slices.length < Math.max(2, minSlices)) {
    throw new SeriesGeometryError(
      `a volume needs at least ${Math.max(2, minSlices)} slices, the series has ${slices.length}`,
    );
  }
  const first = slices[0]!;
  const g0 = first.geometry;
  if (!g0)
    throw new SeriesGeometryError('slice 1 has no Image Position/Orientation (Patient) or Pixel Spacing');
  slices.forEach((s, i) => {
    const g = s.geometry;
    if (!g)
      throw new SeriesGeometryError(
        `slice ${i + 1} has no Image Position/Orientation (Patient) or Pixel Spacing`,
      );
    if (s.rows !== first.rows || s.columns !== first.columns) {
      throw new SeriesGeometryError(
        `slice ${i + 1} is ${s.rows}×${s.columns}, slice 1 is ${first.rows}×${first.columns}`,
      );
    }
    if (g.orientation.some((v, k) => Math.abs(v - g0.orientation[k]!) > ORIENTATION_TOLERANCE)) {
      throw new SeriesGeometryError(`slice ${i + 1} has a different Image Orientation (Patient)`);
    }
    if (g.pixelSpacing.some((v, k) => Math.abs(v - g0.pixelSpacing[k]!) > ORIENTATION_TOLERANCE * v)) {
      throw new SeriesGeometryError(`slice ${i + 1} has a different Pixel Spacing`);
    }
  });

  const normal = sliceNormal(g0.orientation);
  const along = slices.map((s) => dot(s.geometry!.position, normal));
  const order = along.map((_, i) => i).sort((a, b) => along[a]! - along[b]!);
  const gaps = order.slice(1).map((idx, k) => along[idx]! - along[order[k]!]!);
  const meanGap = (along[order[order.length - 1]!]! - along[order[0]!]!) / (order.length - 1);
  if (gaps.some((g) => g < 1e-3)) {
    throw new SeriesGeometryError(
      'two slices share one position (several echoes, phases or a repeated slice)',
    );
  }
  if (gaps.some((g) => Math.abs(g - meanGap) > SPACING_TOLERANCE * meanGap)) {
    const min = Math.min(...gaps).toFixed(2);
    const max = Math.max(...gaps).toFixed(2);
    throw new SeriesGeometryError(
      `slices are unevenly spaced (${min} to ${max} mm): a slice is missing or the series mixes stacks`,
    );
  }

  // Third affine column: the mean step between slice positions (keeps a gantry tilt as a shear).
  const p0 = slices[order[0]!]!.geometry!.position;
  const pn = slices[order[order.length - 1]!]!.geometry!.position;
  const step = [0, 1, 2].map((a) => (pn[a]! - p0[a]!) / (order.length - 1));
  const [rx, ry, rz, cx, cy, cz] = g0.orientation;
  const [rowSpacing, columnSpacing] = g0.pixelSpacing;
  // Columns: i (column index) along the row direction, j (row index) along the column direction, k the step.
  // DICOM patient space is LPS; negate x and y for RAS.
  const lps = [
    [rx * columnSpacing, cx * rowSpacing, step[0]!, p0[0]],
    [ry * columnSpacing, cy * rowSpacing, step[1]!, p0[1]],
    [rz * columnSpacing, cz * rowSpacing, step[2]!, p0[2]],
  ];
  const affine: Affine = new Float64Array(16);
  const flip = [-1, -1, 1];
  for (let r = 0; r < 3; r++) for (let c = 0; c < 4; c++) affine[r * 4 + c] = flip[r]! * lps[r]![c]!;
  affine[15] = 1;

  const plane = first.rows * first.columns;
  const data = new Float32Array(plane * slices.length);
  order.forEach((idx, k) => {
    const pixels = slices[idx]!.pixels;
    if (pixels.length !== plane)
      throw new SeriesGeometryError(`slice ${idx + 1} holds ${pixels.length} values, not ${plane}`);
    data.set(pixels, k * plane);
  });
  return {
    volume: { dims: [first.columns, first.rows, slices.length], data, affine },
    order,
    sliceSpacingMm: meanGap,
  };
}

function dot(a: readonly number[], b: readonly number[]): number {
  return a[0]! * b[0]! + a[1]! * b[1]! + a[2]! * b[2]!;
}
