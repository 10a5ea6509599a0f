// A segmentation's mask over its source image, for the console: the DICOM SEG (PS3.3 A.51) is read with
// dcmjs (BINARY frames, 1 bit per pixel packed across frames; FRACTIONAL frames thresholded at half their
// maximum), each frame mapped to the source image it was derived from (Derivation Image Sequence in the
// per-frame or shared functional groups), and the representative slice is the source slice with the
// largest mask area. The overlay is that slice windowed as the thumbnails are, each segment blended in
// its own colour, area-averaged down to at most `maxSide` pixels, PNG. Pixels only.
import dcmjs from 'dcmjs';
import { DecodeError } from './decode-error.ts';
import type { DecodedImage } from './decode.ts';
import { encodePng } from './png.ts';
import { display, shrink, THUMBNAIL_MAX_SIDE } from './thumbnail.ts';

export const SEGMENTATION_SOP_CLASS = '1.2.840.10008.5.1.4.1.1.66.4';
/** Transfer syntaxes whose Pixel Data dcmjs gives as plain bytes (Deflated is inflated by dcmjs). */
const NATIVE_SYNTAXES = new Set(['1.2.840.10008.1.2', '1.2.840.10008.1.2.1', '1.2.840.10008.1.2.1.99']);
/** Most frames × pixels a SEG may hold here (1 bit each for BINARY): 2^31 bits, 256 MiB. */
const MAX_SEG_PIXELS = 2 ** 31;

/** Segment colours (RGB), by segment number (1 → the first): distinct on a grey image. */
export const SEGMENT_COLOURS: readonly (readonly [number, number, number])[] = [
  [255, 48, 48],
  [40, 140, 255],
  [40, 220, 80],
  [255, 200, 0],
  [200, 70, 255],
  [0, 220, 220],
  [255, 120, 0],
  [255, 80, 180],
];
/** Opacity of a segment over the image. */
export const OVERLAY_ALPHA = 0.5;

export const segmentColour = (segmentNumber: number) =>
  SEGMENT_COLOURS[(segmentNumber - 1) % SEGMENT_COLOURS.length]!;

export interface SegSegment {
  number: number;
  label: string;
}

export interface SegFrame {
  segmentNumber: number;
  sourceSopInstanceUid: string;
  /** 1-based frame of a multi-frame source (1 for a single-frame image). */
  sourceFrame: number;
  /** Pixels set in this frame. */
  area: number;
}

export interface SegMasks {
  sopInstanceUid: string;
  rows: number;
  columns: number;
  segments: SegSegment[];
  frames: SegFrame[];
  /** The frame's pixels: 1 where the segment is, else 0 (rows × columns). */
  mask(frameIndex: number): Uint8Array;
}

type Item = Record<string, unknown>;

const first = (v: unknown): Item | undefined => (Array.isArray(v) ? (v[0] as Item | undefined) : undefined);
const num = (v: unknown): number | undefined => {
  const x = Array.isArray(v) ? v[0] : v;
  const n = typeof x === 'string' ? Number(x) : x;
  return typeof n === 'number' && Number.isFinite(n) ? n : undefined;
};

/** Reads a SEG's segments and frames; throws DecodeError when it is not a SEG this can show. */
export function readSegMasks(bytes: Uint8Array): SegMasks {
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  let dict: { meta: Record<string, { Value?: unknown[] }>; dict: Record<string, unknown> };
  try {
    dict = dcmjs.data.DicomMessage.readFile(buffer) as typeof dict;
  } catch (err) {
    throw new DecodeError(`not a readable DICOM file: ${(err as Error).message}`);
  }
  const syntax = String(dict.meta['00020010']?.Value?.[0] ?? '');
  const ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.dict) as Item;
  if (ds.SOPClassUID !== SEGMENTATION_SOP_CLASS) throw new DecodeError('not a Segmentation object');
  if (!NATIVE_SYNTAXES.has(syntax))
    throw new DecodeError(`SEG in transfer syntax ${syntax} is not supported`);
  const rows = num(ds.Rows) ?? 0;
  const columns = num(ds.Columns) ?? 0;
  const count = num(ds.NumberOfFrames) ?? 1;
  const type = String(ds.SegmentationType ?? '');
  const bitsAllocated = num(ds.BitsAllocated);
  if (!(rows > 0 && columns > 0 && count > 0)) throw new DecodeError('SEG without rows, columns or frames');
  if (rows * columns * count > MAX_SEG_PIXELS) throw new DecodeError('SEG too large to show');
  let threshold: number;
  if (type === 'BINARY' && bitsAllocated === 1) threshold = 1;
  else if (type === 'FRACTIONAL' && bitsAllocated === 8)
    threshold = Math.max(1, Math.ceil((num(ds.MaximumFractionalValue) ?? 255) / 2));
  else throw new DecodeError(`SEG type ${type} with ${bitsAllocated} bits allocated is not supported`);

  const pixelData = ds.PixelData;
  const raw = Array.isArray(pixelData) ? pixelData[0] : pixelData;
  if (!(raw instanceof ArrayBuffer)) throw new DecodeError('SEG without native Pixel Data');
  const data = new Uint8Array(raw);
  const perFrame = rows * columns;
  const needed = type === 'BINARY' ? Math.ceil((perFrame * count) / 8) : perFrame * count;
  if (data.length < needed) throw new DecodeError(`SEG Pixel Data has ${data.length} bytes, needs ${needed}`);

  const segments: SegSegment[] = ((ds.SegmentSequence as Item[] | undefined) ?? []).map((s) => ({
    number: num(s.SegmentNumber) ?? 0,
    label: String(s.SegmentLabel ?? ''),
  }));
  const shared = first(ds.SharedFunctionalGroupsSequence) ?? {};
  const perFrameGroups = (ds.PerFrameFunctionalGroupsSequence as Item[] | undefined) ?? [];
  const group = (i: number, name: string) => first(perFrameGroups[i]?.[name]) ?? first(shared[name]);

  const isSet =
    type === 'BINARY'
      ? (bit: number) => (data[bit >> 3]! >> (bit & 7)) & 1
      : (p: number) => (data[p]! >= threshold ? 1 : 0);

  const frames: SegFrame[] = [];
  for (let i = 0; i < count; i++) {
    const segmentNumber = num(group(i, 'SegmentIdentificationSequence')?.ReferencedSegmentNumber);
    const source = first(group(i, 'DerivationImageSequence')?.SourceImageSequence);
    const sop = source?.ReferencedSOPInstanceUID;
    if (segmentNumber === undefined || typeof sop !== 'string')
      throw new DecodeError(`SEG frame ${i + 1} names no segment or no source image`);
    let area = 0;
    for (let p = i * perFrame, end = p + perFrame; p < end; p++) area += isSet(p);
    frames.push({
      segmentNumber,
      sourceSopInstanceUid: sop,
      sourceFrame: num(source?.ReferencedFrameNumber) ?? 1,
      area,
    });
  }
  return {
    sopInstanceUid: String(ds.SOPInstanceUID ?? ''),
    rows,
    columns,
    segments,
    frames,
    mask(frameIndex: number): Uint8Array {
      const out = new Uint8Array(perFrame);
      const base = frameIndex * perFrame;
      for (let p = 0; p < perFrame; p++) out[p] = isSet(base + p);
      return out;
    },
  };
}

export interface RepresentativeSlice {
  sopInstanceUid: string;
  frame: number;
  /** Mask pixels over every segment on this slice. */
  area: number;
  /** Indexes into SegMasks.frames of the frames on this slice. */
  frames: number[];
}

/** The source slice (instance + frame) with the largest mask area; undefined when every frame is empty. */
export function representativeSlice(seg: SegMasks): RepresentativeSlice | undefined {
  const slices = new Map<string, RepresentativeSlice>();
  seg.frames.forEach((f, i) => {
    const key = `${f.sourceSopInstanceUid}#${f.sourceFrame}`;
    let s = slices.get(key);
    if (!s)
      slices.set(
        key,
        (s = { sopInstanceUid: f.sourceSopInstanceUid, frame: f.sourceFrame, area: 0, frames: [] }),
      );
    s.area += f.area;
    s.frames.push(i);
  });
  let best: RepresentativeSlice | undefined;
  for (const s of slices.values()) if (s.area > 0 && (!best || s.area > best.area)) best = s;
  return best;
}

export interface OverlaySegment extends SegSegment {
  colour: [number, number, number];
  /** Pixels of this segment on the representative slice (source resolution). */
  area: number;
}

export interface Overlay {
  png: Buffer;
  rows: number;
  columns: number;
  segments: OverlaySegment[];
}

/**
 * The overlay PNG of `slice` on its decoded source image (`frameIndex` of `image`, 0-based): the image
 * windowed to grey, each segment's pixels blended with its colour.
 */
export function renderOverlay(
  image: DecodedImage,
  frameIndex: number,
  seg: SegMasks,
  slice: RepresentativeSlice,
  maxSide = THUMBNAIL_MAX_SIDE,
): Overlay {
  if (image.rows !== seg.rows || image.columns !== seg.columns)
    throw new DecodeError(
      `the SEG is ${seg.columns}×${seg.rows} and its source image ${image.columns}×${image.rows}`,
    );
  if (!image.pixels[frameIndex]) throw new DecodeError(`the source image has no frame ${frameIndex + 1}`);
  const { data, channels } = display(image, frameIndex);
  const n = image.rows * image.columns;
  const rgb = new Uint8Array(n * 3);
  for (let p = 0; p < n; p++)
    for (let c = 0; c < 3; c++) rgb[p * 3 + c] = data[channels === 1 ? p : p * 3 + c]!;
  const areas = new Map<number, number>();
  for (const i of slice.frames) {
    const f = seg.frames[i]!;
    const colour = segmentColour(f.segmentNumber);
    const mask = seg.mask(i);
    for (let p = 0; p < n; p++) {
      if (!mask[p]) continue;
      for (let c = 0; c < 3; c++)
        rgb[p * 3 + c] = Math.round(rgb[p * 3 + c]! * (1 - OVERLAY_ALPHA) + colour[c]! * OVERLAY_ALPHA);
    }
    areas.set(f.segmentNumber, (areas.get(f.segmentNumber) ?? 0) + f.area);
  }
  const scale = Math.min(1, maxSide / Math.max(image.rows, image.columns));
  const rows = Math.max(1, Math.round(image.rows * scale));
  const columns = Math.max(1, Math.round(image.columns * scale));
  const small = shrink(rgb, image.rows, image.columns, 3, rows, columns);
  const segments = [...areas]
    .sort(([a], [b]) => a - b)
    .map(([number, area]) => ({
      number,
      label: seg.segments.find((s) => s.number === number)?.label ?? `segment ${number}`,
      colour: [...segmentColour(number)] as [number, number, number],
      area,
    }));
  return { png: encodePng(small, columns, rows, 3), rows, columns, segments };
}
