import type { VolumeManifest } from '../models/manifest.ts';
import type {
  ModelResult,
  SegmentationResult,
  SourceInstanceRef,
  VolumeFinding,
} from '../pipeline/findings.ts';
import type { MicroBatcher } from './runtime/batcher.ts';
import type { DecodePool } from './runtime/decode-pool.ts';
import { conform, scaleMinMax, transpose, untranspose } from '../imaging/conform.ts';
import { decodeImage, DecodeError, type DecodedImage, type SliceGeometry } from '../imaging/decode.ts';
import { rejectReason } from './instance-input.ts';
import { assembleVolume, SeriesGeometryError, type VolumeSlice } from '../imaging/series-volume.ts';
import { apply, invert, multiply, voxelCount, voxelSpacing, type Volume } from '../imaging/volume.ts';
import { inferenceEvents } from './events.ts';

// A 'volume' model end to end: the series' slices → one volume sorted along the slice normal → conformed
// grid → min–max → the model → argmax label map → per-label volumes (mL) and the label map resampled
// back onto every source slice (nearest neighbour), for a DICOM SEG in the source geometry. A slice is
// a single-frame image or one frame of an enhanced multi-frame object (its geometry from the
// functional groups), so a series may be one multi-frame instance, many single frames, or a mix.

/** Largest series (sum of rows × columns over its slices) made into a volume: 1 GiB of float32 (a 1000-slice 512² CT fits). */
export const MAX_SERIES_VOXELS = 256 * 1024 * 1024;

/** Slices decoded ahead of the one examined. */
const DECODE_AHEAD = 16;

/** All decoding of one series, kept or not, is capped at this many times the voxel budget. */
const DECODE_WORK_FACTOR = 4;

/** One slice of the series: a single-frame image or one frame of a multi-frame image. */
interface VolumeFrame extends VolumeSlice {
  /** With frameNumber when the image has several frames. */
  source: SourceInstanceRef;
  /** Always known: frames without a place in the patient are not slices. */
  geometry: SliceGeometry;
}

/** The series cannot be read as one volume; the reasons are in the message. */
export class UnusableSeriesError extends Error {
  override name = 'UnusableSeriesError';
}

export interface Segmented {
  /** Label per voxel of the conformed grid (first axis fastest). */
  labels: Uint8Array;
  grid: { dims: [number, number, number]; affine: Volume['affine'] };
  /** Voxels per class index, background (0) included. */
  counts: number[];
  /** mm³ per conformed voxel. */
  voxelVolumeMm3: number;
}

/** Conform, scale, run and argmax one volume. */
export async function segmentVolume(
  m: VolumeManifest,
  batcher: MicroBatcher,
  source: Volume,
): Promise<Segmented> {
  const grid = conform(source, {
    shape: m.input.shape,
    spacingMm: m.preprocessing.conform.spacingMm,
    orientation: m.preprocessing.conform.orientation,
  });
  scaleMinMax(grid.data);
  const input = m.input.voxelOrder === 'transposed' ? transpose(grid.data, grid.dims) : grid.data;
  const scores = await batcher.run(input);
  const labels = argmax(scores, m.outputs.classes, grid.dims, m.input.voxelOrder);
  const counts = new Array<number>(m.outputs.classes).fill(0);
  for (let n = 0; n < labels.length; n++) counts[labels[n]!]!++;
  const [sx, sy, sz] = voxelSpacing(grid.affine);
  return { labels, grid: { dims: grid.dims, affine: grid.affine }, counts, voxelVolumeMm3: sx * sy * sz };
}

/** Class with the highest score per voxel, returned in file order whatever order the model used. */
function argmax(
  scores: Float32Array,
  classes: number,
  dims: [number, number, number],
  order: VolumeManifest['input']['voxelOrder'],
): Uint8Array {
  const n = voxelCount(dims);
  if (scores.length !== classes * n) {
    throw new RangeError(`model output holds ${scores.length} values, expected ${classes}×${n}`);
  }
  const best = new Uint8Array(n);
  for (let v = 0; v < n; v++) {
    let label = 0;
    let max = scores[v]!;
    for (let c = 1; c < classes; c++) {
      const s = scores[c * n + v]!;
      if (s > max) {
        max = s;
        label = c;
      }
    }
    best[v] = label;
  }
  return order === 'file' ? best : untranspose(best, dims);
}

/** Per-label volume findings for the labels the manifest reports. */
export function volumeFindings(m: VolumeManifest, seg: Segmented): VolumeFinding[] {
  return m.outputs.labels
    .filter((l) => l.report)
    .map((l) => {
      const voxelCount = seg.counts[l.classIndex] ?? 0;
      return {
        kind: 'volume',
        label: l.name,
        concept: l.concept,
        voxelCount,
        volumeMl: (voxelCount * seg.voxelVolumeMm3) / 1000,
      };
    });
}

/** The conformed label map sampled (nearest neighbour) at every pixel of every source slice. */
export function labelsOnSlices(seg: Segmented, source: Volume): Uint8Array[] {
  const toGrid = multiply(invert(seg.grid.affine), source.affine); // source voxel → conformed voxel
  const [gx, gy, gz] = seg.grid.dims;
  const [columns, rows, count] = source.dims;
  const slices: Uint8Array[] = [];
  for (let k = 0; k < count; k++) {
    const slice = new Uint8Array(rows * columns);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < columns; c++) {
        const [x, y, z] = apply(toGrid, c, r, k);
        const i = Math.round(x);
        const j = Math.round(y);
        const l = Math.round(z);
        if (i < 0 || j < 0 || l < 0 || i >= gx || j >= gy || l >= gz) continue;
        slice[r * columns + c] = seg.labels[(l * gy + j) * gx + i]!;
      }
    }
    slices.push(slice);
  }
  return slices;
}

/**
 * Runs a volume model on one series. Slices that do not decode, or that do not share the main stack's
 * size and orientation (a localizer in the same series), are skipped and logged; if what is left does
 * not form one evenly spaced volume the job fails with UnusableSeriesError.
 */
export async function runVolumeModel(
  m: VolumeManifest,
  batcher: MicroBatcher,
  sources: SourceInstanceRef[],
  decodePool?: DecodePool,
  maxSeriesVoxels = MAX_SERIES_VOXELS,
): Promise<Omit<ModelResult, 'model' | 'provider' | 'inferenceMs'>> {
  const skipped: string[] = [];
  const decoded: VolumeFrame[] = [];
  const options = { frames: 'all' as const, modalityLut: m.preprocessing.modalityLut };
  const decode = (file: string, maxSamples: number) => {
    const limited = { ...options, limits: { maxSamples } };
    return decodePool ? decodePool.decode(file, limited) : decodeImage(file, limited);
  };
  // Slices decode ahead of the one examined (in the pool's threads when there is one). Each gets an
  // equal share of what is left of the series budget as its decoder limit (in samples, each a float32
  // once decoded), so the slices in flight together stay within the budget: a hostile series is
  // stopped before it is held in memory. Frames decoded but not kept (no position of their own) count
  // against a looser cap on all decoding, so a series of them cannot make the worker decode forever.
  const ahead: Promise<DecodedImage | Error>[] = [];
  let voxels = 0;
  let decodedSamples = 0;
  const maxDecodedSamples = DECODE_WORK_FACTOR * maxSeriesVoxels;
  for (let i = 0; i < sources.length; i++) {
    const window = Math.min(DECODE_AHEAD, sources.length - i);
    const share = Math.floor(Math.max(0, maxSeriesVoxels - voxels) / window);
    for (let k = i; k < i + window; k++) {
      ahead[k] ??= decode(sources[k]!.file, share).catch((err: unknown) =>
        err instanceof Error ? err : new Error(String(err)),
      );
    }
    const source = sources[i]!;
    const image = await ahead[i]!;
    delete ahead[i];
    if (image instanceof Error) {
      if (!(image instanceof DecodeError)) throw image;
      skipped.push(`${source.sopInstanceUid}: ${image.message}`);
      continue;
    }
    decodedSamples += image.pixels.reduce((n, p) => n + p.length, 0);
    if (decodedSamples > maxDecodedSamples) {
      throw new UnusableSeriesError(
        `${m.id}: the series decodes to more than ${maxDecodedSamples} samples (${voxels} of them usable)`,
      );
    }
    const reason = rejectReason(m, image, true);
    if (reason) {
      skipped.push(`${source.sopInstanceUid}: ${reason}`);
      continue;
    }
    // Only frames that have a place in the patient are kept (a cine's later frames are dropped here).
    const unplaced: number[] = [];
    image.pixels.forEach((pixels, frame) => {
      const ref = image.pixels.length > 1 ? { ...source, frameNumber: frame + 1 } : source;
      const geometry = image.frameGeometries?.[frame];
      if (!geometry) {
        unplaced.push(frame + 1);
        return;
      }
      // Each image is within the decoder's limits; the slices kept for the volume must be too.
      voxels += image.rows * image.columns;
      if (voxels > maxSeriesVoxels) {
        throw new UnusableSeriesError(`${m.id}: the series holds more than ${maxSeriesVoxels} voxels`);
      }
      decoded.push({ source: ref, rows: image.rows, columns: image.columns, pixels, geometry });
    });
    if (unplaced.length > 0) {
      const which = image.pixels.length === 1 ? '' : ` (frame ${frameList(unplaced)})`;
      skipped.push(
        `${source.sopInstanceUid}${which}: no Image Position/Orientation (Patient) or Pixel Spacing`,
      );
    }
  }
  const stack = largestStack(decoded);
  for (const d of decoded)
    if (!stack.includes(d)) skipped.push(`${describe(d.source)}: not part of the main stack`);
  if (skipped.length > 0) {
    inferenceEvents.imagesSkipped(m.id, skipped);
  }

  let assembled;
  try {
    assembled = assembleVolume(stack, m.accepts.minSlices);
  } catch (err) {
    if (!(err instanceof SeriesGeometryError)) throw err;
    const why = skipped.length ? ` (skipped: ${skipped.slice(0, 3).join('; ')})` : '';
    throw new UnusableSeriesError(`${m.id}: ${err.message}${why}`);
  }
  const ordered = assembled.order.map((i) => stack[i]!);
  const seg = await segmentVolume(m, batcher, assembled.volume);
  const first = ordered[0]!;
  const segmentation: SegmentationResult = {
    rows: first.rows,
    columns: first.columns,
    slices: labelsOnSlices(seg, assembled.volume),
    segments: m.outputs.labels.map((l) => ({ labelValue: l.classIndex, label: l.name, concept: l.concept })),
  };
  inferenceEvents.volumeAssembled(m.id, ordered.length, assembled.sliceSpacingMm, seg.counts);
  return {
    findings: volumeFindings(m, seg),
    sources: ordered.map((d) => d.source),
    segmentation,
    skipped,
  };
}

/** 1-based frame numbers as ranges: 2-30, or 2, 5-7. */
function frameList(frames: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < frames.length; i++) {
    let j = i;
    while (j + 1 < frames.length && frames[j + 1] === frames[j]! + 1) j++;
    parts.push(j > i ? `${frames[i]}-${frames[j]}` : `${frames[i]}`);
    i = j;
  }
  return parts.join(', ');
}

function describe(ref: SourceInstanceRef): string {
  return ref.frameNumber ? `${ref.sopInstanceUid} frame ${ref.frameNumber}` : ref.sopInstanceUid;
}

/** The largest group of slices with one size and orientation (ties: the first seen). */
function largestStack(items: VolumeFrame[]): VolumeFrame[] {
  const groups = new Map<string, VolumeFrame[]>();
  for (const item of items) {
    const { rows, columns } = item;
    const key = `${rows}x${columns}|${item.geometry.orientation.map((v) => v.toFixed(3)).join(',')}`;
    const group = groups.get(key) ?? [];
    group.push(item);
    groups.set(key, group);
  }
  let best: VolumeFrame[] = [];
  for (const group of groups.values()) if (group.length > best.length) best = group;
  return best;
}
