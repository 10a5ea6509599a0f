import { DecodeError } from './decode-error.ts';

// Encapsulated Pixel Data (PS3.5 A.4): a Basic Offset Table item, then fragments (items), then a
// Sequence Delimitation Item. A frame is one or more consecutive fragments; where each frame starts is
// told by the Extended Offset Table (7FE0,0001)/(7FE0,0002), else by the Basic Offset Table, else only
// by the code streams themselves. This module reads the items, splits them into one code stream per
// frame, and (for fixtures and the test corpus) writes them. Pure byte work: no dcmjs, no codec.
// Everything read here is hostile input: every offset and length is checked before it is used.

const ITEM = 0xe000;
const SEQUENCE_DELIMITER = 0xe0dd;
const ITEM_GROUP = 0xfffe;
const UNDEFINED_LENGTH = 0xffffffff;

/** More fragments than this in one Pixel Data is refused (each costs an object; the bytes are bounded by the file). */
export const MAX_FRAGMENTS = 1 << 18;

export interface Fragment {
  /** Offset of this fragment's item tag from the first item tag after the Basic Offset Table (PS3.5 A.4). */
  offset: number;
  /** The item's value: a view into the file, not a copy. */
  data: Uint8Array;
}

export interface EncapsulatedItems {
  /** The Basic Offset Table's entries; empty when its item is empty. */
  basicOffsets: number[];
  fragments: Fragment[];
  /** Bytes from the first item tag after the Basic Offset Table to the Sequence Delimitation Item. */
  byteLength: number;
}

/**
 * Reads the items of encapsulated Pixel Data. `start` is the position of the Basic Offset Table's
 * item tag (right after the Pixel Data element's undefined length). Little endian, as every
 * encapsulated transfer syntax is.
 */
export function readEncapsulatedItems(
  bytes: Uint8Array,
  start: number,
  maxFragments = MAX_FRAGMENTS,
): EncapsulatedItems {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = start;
  let basicOffsets: number[] | undefined;
  let firstFragmentAt = -1;
  const fragments: Fragment[] = [];
  for (;;) {
    if (pos + 8 > bytes.byteLength) {
      throw new DecodeError(
        'encapsulated Pixel Data ends without a Sequence Delimitation Item: the file is truncated',
      );
    }
    const group = view.getUint16(pos, true);
    const element = view.getUint16(pos + 2, true);
    const length = view.getUint32(pos + 4, true);
    if (group === ITEM_GROUP && element === SEQUENCE_DELIMITER) {
      if (!basicOffsets) throw new DecodeError('encapsulated Pixel Data has no Basic Offset Table item');
      return { basicOffsets, fragments, byteLength: pos - firstFragmentAt };
    }
    if (group !== ITEM_GROUP || element !== ITEM) {
      throw new DecodeError(
        `unexpected tag (${hex4(group)},${hex4(element)}) at byte ${pos} of encapsulated Pixel Data`,
      );
    }
    if (length === UNDEFINED_LENGTH) {
      throw new DecodeError('an item of encapsulated Pixel Data has undefined length');
    }
    const valueAt = pos + 8;
    if (valueAt + length > bytes.byteLength) {
      throw new DecodeError(
        `an item of encapsulated Pixel Data declares ${length} bytes, more than the file holds: the file is truncated`,
      );
    }
    if (!basicOffsets) {
      if (length % 4 !== 0)
        throw new DecodeError(`the Basic Offset Table is ${length} bytes, not a multiple of 4`);
      basicOffsets = [];
      for (let i = 0; i < length; i += 4) basicOffsets.push(view.getUint32(valueAt + i, true));
      firstFragmentAt = valueAt + length;
    } else {
      if (fragments.length >= maxFragments) {
        throw new DecodeError(`encapsulated Pixel Data has more than ${maxFragments} fragments`);
      }
      fragments.push({ offset: pos - firstFragmentAt, data: bytes.subarray(valueAt, valueAt + length) });
    }
    pos = valueAt + length;
  }
}

/** How the frames of a transfer syntax's code streams can be told apart without an offset table. */
export type CodestreamKind = 'jpeg' | 'jpeg2000' | 'rle' | 'other';

export function codestreamKind(transferSyntaxUid: string): CodestreamKind {
  if (transferSyntaxUid === '1.2.840.10008.1.2.5') return 'rle';
  // JPEG 2000 (.90/.91), JPIP-referenced ones aside, and HTJ2K (.201–.203): SOC … EOC.
  if (/^1\.2\.840\.10008\.1\.2\.4\.(90|91|92|93|201|202|203)$/.test(transferSyntaxUid)) return 'jpeg2000';
  // JPEG baseline/extended/lossless (.50–.70) and JPEG-LS (.80/.81): SOI … EOI.
  if (/^1\.2\.840\.10008\.1\.2\.4\.(5\d|6\d|70|80|81)$/.test(transferSyntaxUid)) return 'jpeg';
  return 'other';
}

export interface FrameTables {
  /** Extended Offset Table (7FE0,0001) entries, when the data set has one. */
  extendedOffsets?: readonly number[];
  /** Extended Offset Table Lengths (7FE0,0002) entries. */
  extendedLengths?: readonly number[];
}

/**
 * One code stream per frame (fragments of a frame joined), PS3.5 A.4: the Extended Offset Table when
 * present, else the Basic Offset Table, else one fragment per frame when the counts agree, else the
 * code streams' own start and end markers (JPEG SOI/EOI, JPEG 2000 SOC+SIZ/EOC). RLE frames are one
 * fragment each (A.4.2), so RLE without a table needs as many fragments as frames.
 */
export function splitFrames(
  items: EncapsulatedItems,
  frames: number,
  kind: CodestreamKind,
  tables: FrameTables = {},
): Uint8Array[] {
  const { fragments } = items;
  if (fragments.length === 0) throw new DecodeError('encapsulated Pixel Data holds no fragment');
  if (tables.extendedOffsets !== undefined || tables.extendedLengths !== undefined) {
    return byExtendedOffsets(items, frames, tables.extendedOffsets, tables.extendedLengths);
  }
  if (items.basicOffsets.length > 0) {
    const starts = fragmentStarts(items, items.basicOffsets, frames, 'Basic Offset Table');
    return starts.map((s, i) => join(fragments.slice(s, starts[i + 1] ?? fragments.length)));
  }
  if (frames === 1) return [join(fragments)];
  if (fragments.length === frames) return fragments.map((f) => f.data);
  if (fragments.length < frames) {
    throw new DecodeError(`${fragments.length} fragments cannot hold ${frames} frames`);
  }
  if (kind === 'rle') {
    throw new DecodeError(
      `RLE Lossless has ${fragments.length} fragments for ${frames} frames and no offset table: each frame must be exactly one fragment (PS3.5 A.4.2)`,
    );
  }
  if (kind === 'other') {
    throw new DecodeError(
      `cannot split ${fragments.length} fragments into ${frames} frames: no offset table, and this transfer syntax's code streams have no known start marker`,
    );
  }
  const starts = codestreamStarts(fragments, kind);
  const name = kind === 'jpeg' ? 'JPEG (SOI … EOI)' : 'JPEG 2000 (SOC … EOC)';
  if (starts[0] !== 0) {
    throw new DecodeError(`the first fragment does not start a ${name} code stream`);
  }
  if (starts.length !== frames) {
    throw new DecodeError(
      `found ${starts.length} ${name} code streams in ${fragments.length} fragments, Number of Frames is ${frames}`,
    );
  }
  return starts.map((s, i) => join(fragments.slice(s, starts[i + 1] ?? fragments.length)));
}

function byExtendedOffsets(
  items: EncapsulatedItems,
  frames: number,
  offsets: readonly number[] | undefined,
  lengths: readonly number[] | undefined,
): Uint8Array[] {
  if (!offsets || !lengths) {
    throw new DecodeError(
      'the Extended Offset Table (7FE0,0001) and its Lengths (7FE0,0002) must be present together',
    );
  }
  if (lengths.length !== offsets.length) {
    throw new DecodeError(
      `the Extended Offset Table has ${offsets.length} entries and its Lengths ${lengths.length}`,
    );
  }
  const { fragments } = items;
  const starts = fragmentStarts(items, offsets, frames, 'Extended Offset Table');
  return starts.map((s, i) => {
    const data = join(fragments.slice(s, starts[i + 1] ?? fragments.length));
    const length = lengths[i]!;
    // A fragment is padded to even length: the frame may be one byte shorter than its fragments.
    if (length > data.byteLength || length < data.byteLength - 1) {
      throw new DecodeError(
        `Extended Offset Table Lengths gives frame ${i + 1} ${length} bytes, its fragments hold ${data.byteLength}`,
      );
    }
    return data.subarray(0, length);
  });
}

/** Index of the first fragment of each frame, from offset table entries (checked: in order, on an item). */
function fragmentStarts(
  items: EncapsulatedItems,
  offsets: readonly number[],
  frames: number,
  table: string,
): number[] {
  if (offsets.length !== frames) {
    throw new DecodeError(`the ${table} has ${offsets.length} entries, Number of Frames is ${frames}`);
  }
  const byOffset = new Map(items.fragments.map((f, i) => [f.offset, i]));
  const starts: number[] = [];
  for (let i = 0; i < offsets.length; i++) {
    const offset = offsets[i]!;
    if (i === 0 && offset !== 0) throw new DecodeError(`the ${table}'s first entry is ${offset}, not 0`);
    if (i > 0 && offset <= offsets[i - 1]!) {
      throw new DecodeError(
        `the ${table} is not increasing: entry ${i + 1} (${offset}) follows ${offsets[i - 1]}`,
      );
    }
    if (offset >= items.byteLength) {
      throw new DecodeError(
        `the ${table}'s entry ${i + 1} (${offset}) points past the end of the Pixel Data (${items.byteLength} bytes of fragments)`,
      );
    }
    const index = byOffset.get(offset);
    if (index === undefined) {
      throw new DecodeError(
        `the ${table}'s entry ${i + 1} (${offset}) does not point at a fragment's item tag`,
      );
    }
    starts.push(index);
  }
  return starts;
}

/** Fragments that begin a code stream: a start marker, right after a fragment that ended one (or first). */
function codestreamStarts(fragments: Fragment[], kind: 'jpeg' | 'jpeg2000'): number[] {
  const starts: number[] = [];
  for (let i = 0; i < fragments.length; i++) {
    if (!beginsCodestream(fragments[i]!.data, kind)) continue;
    if (i === 0 || endsCodestream(fragments[i - 1]!.data)) starts.push(i);
  }
  return starts;
}

function beginsCodestream(d: Uint8Array, kind: 'jpeg' | 'jpeg2000'): boolean {
  if (kind === 'jpeg') return d.length >= 3 && d[0] === 0xff && d[1] === 0xd8 && d[2] === 0xff;
  // SOC + SIZ (a raw code stream), or a JP2 file's signature box (some encoders wrap it).
  if (d.length >= 4 && d[0] === 0xff && d[1] === 0x4f && d[2] === 0xff && d[3] === 0x51) return true;
  return (
    d.length >= 8 &&
    d[0] === 0 &&
    d[1] === 0 &&
    d[2] === 0 &&
    d[3] === 0x0c &&
    d[4] === 0x6a &&
    d[5] === 0x50 &&
    d[6] === 0x20 &&
    d[7] === 0x20
  );
}

/** Ends with EOI / EOC (FFD9), allowing the padding bytes an encoder adds to reach even length. */
function endsCodestream(d: Uint8Array): boolean {
  const eoc = (end: number) => end >= 2 && d[end - 2] === 0xff && d[end - 1] === 0xd9;
  return eoc(d.length) || (d[d.length - 1] === 0 && eoc(d.length - 1));
}

function join(fragments: Fragment[]): Uint8Array {
  if (fragments.length === 1) return fragments[0]!.data;
  const out = new Uint8Array(fragments.reduce((n, f) => n + f.data.byteLength, 0));
  let at = 0;
  for (const f of fragments) {
    out.set(f.data, at);
    at += f.data.byteLength;
  }
  return out;
}

function hex4(n: number): string {
  return n.toString(16).toUpperCase().padStart(4, '0');
}

// --- Writing (fixtures, test corpus).

export type OffsetTableChoice = 'none' | 'basic' | 'extended';

/**
 * Pixel Data elements (explicit VR little endian, in tag order) for frames given as fragments:
 * optionally Extended Offset Table (7FE0,0001) and its Lengths (7FE0,0002), then (7FE0,0010) OB of
 * undefined length with a Basic Offset Table (filled for 'basic', empty otherwise). Odd fragments are
 * padded with one zero byte. Append to a data set that has no element past (7FE0,0010).
 */
export function encodePixelDataElements(
  framesAsFragments: Uint8Array[][],
  table: OffsetTableChoice,
): Uint8Array {
  const frames = framesAsFragments.map((fragments) => fragments.map(padEven));
  const offsets: number[] = [];
  const lengths: number[] = [];
  let at = 0;
  for (const fragments of frames) {
    if (fragments.length === 0) throw new RangeError('a frame needs at least one fragment');
    offsets.push(at);
    lengths.push(fragments.reduce((n, f) => n + f.byteLength, 0));
    at += fragments.reduce((n, f) => n + 8 + f.byteLength, 0);
  }
  if (at > 0xfffffffe) throw new RangeError('encapsulated Pixel Data over 4 GiB');
  const parts: Uint8Array[] = [];
  if (table === 'extended') {
    parts.push(elementHeader(0x0001, 'OV', offsets.length * 8), uint64s(offsets));
    parts.push(elementHeader(0x0002, 'OV', lengths.length * 8), uint64s(lengths));
  }
  parts.push(elementHeader(0x0010, 'OB', UNDEFINED_LENGTH));
  const bot = table === 'basic' ? offsets : [];
  parts.push(itemHeader(ITEM, bot.length * 4), uint32s(bot));
  for (const fragments of frames) {
    for (const f of fragments) parts.push(itemHeader(ITEM, f.byteLength), f);
  }
  parts.push(itemHeader(SEQUENCE_DELIMITER, 0));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.byteLength;
  }
  return out;
}

/**
 * Cuts one code stream into `count` fragments of uneven, even lengths (the last may be odd; it is
 * padded when written). `seed` varies the cut points reproducibly.
 */
export function cutCodestream(data: Uint8Array, count: number, seed = 1): Uint8Array[] {
  if (!Number.isInteger(count) || count < 1) throw new RangeError('count must be a positive integer');
  if (data.byteLength < count * 4)
    throw new RangeError(`${data.byteLength} bytes cannot make ${count} fragments`);
  let state = (seed * 2654435761) >>> 0 || 1;
  const next = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
  // Weights 1..3 give fragments of visibly different sizes; cut points are rounded to even offsets.
  const weights = Array.from({ length: count }, () => 1 + 2 * next());
  const total = weights.reduce((a, b) => a + b, 0);
  const cuts: number[] = [0];
  let acc = 0;
  for (let i = 0; i < count - 1; i++) {
    acc += weights[i]!;
    let cut = Math.floor((data.byteLength * acc) / total / 2) * 2;
    cut = Math.max(cut, cuts[cuts.length - 1]! + 2);
    cuts.push(cut);
  }
  cuts.push(data.byteLength);
  return cuts.slice(0, -1).map((c, i) => data.subarray(c, cuts[i + 1]));
}

function padEven(f: Uint8Array): Uint8Array {
  if (f.byteLength % 2 === 0) return f;
  const out = new Uint8Array(f.byteLength + 1);
  out.set(f);
  return out;
}

function elementHeader(element: number, vr: 'OB' | 'OV', length: number): Uint8Array {
  const out = new Uint8Array(12);
  const view = new DataView(out.buffer);
  view.setUint16(0, 0x7fe0, true);
  view.setUint16(2, element, true);
  out[4] = vr.charCodeAt(0);
  out[5] = vr.charCodeAt(1);
  view.setUint32(8, length, true);
  return out;
}

function itemHeader(element: number, length: number): Uint8Array {
  const out = new Uint8Array(8);
  const view = new DataView(out.buffer);
  view.setUint16(0, ITEM_GROUP, true);
  view.setUint16(2, element, true);
  view.setUint32(4, length, true);
  return out;
}

function uint32s(values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setUint32(i * 4, v, true));
  return out;
}

function uint64s(values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 8);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setBigUint64(i * 8, BigInt(v), true));
  return out;
}

/** 64-bit little-endian unsigned values (an OV element) as numbers; each must be below 2^53. */
export function readUint64s(bytes: Uint8Array, what: string): number[] {
  if (bytes.byteLength % 8 !== 0)
    throw new DecodeError(`${what} is ${bytes.byteLength} bytes, not a multiple of 8`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: number[] = [];
  for (let i = 0; i < bytes.byteLength; i += 8) {
    const v = view.getBigUint64(i, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new DecodeError(`${what} holds an offset over 2^53`);
    out.push(Number(v));
  }
  return out;
}
