import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { endianness } from 'node:os';
import dicomParser from 'dicom-parser';
import { EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN } from '../dicom/transfer-syntax.ts';
import {
  decodeLimits,
  frameByteLength,
  readHeader,
  rescaleFor,
  windowFor,
  type Dataset,
  type DecodeLimits,
  type PixelHeader,
} from './decode.ts';

// The fast path for the images most models see: uncompressed little-endian greyscale. dcmjs spends
// ~0.7 ms building a full data set for a 512×512 CT slice (it copies every value) and a fresh 512 KB
// buffer costs ~0.25 ms in page faults, together more than a third of a SqueezeNet inference on two
// cores (bench/inference). dicom-parser indexes the elements in place (~0.07 ms) and the file is read
// into one reused buffer, so the stored frame is used where it lies. Whatever this path does not handle
// (compressed or big-endian or deflated data, colour, enhanced multi-frame functional groups, 32-bit
// samples, anything malformed) returns undefined and goes through decode.ts, which also words the errors.

const LE_NATIVE = new Set([IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN]);
const ENHANCED_GROUPS = ['x52009229', 'x52009230']; // Shared / Per-frame Functional Groups Sequence
/** Largest file read into the reused buffer; bigger ones (long multi-frame objects) take the general path. */
export const SCRATCH_MAX_BYTES = 64 * 1024 * 1024;

export interface NativeGreyFrame {
  header: PixelHeader;
  /** Stored words of the first frame, little endian, where they lie in the read buffer. */
  bytes: Uint8Array;
  rescaleSlope: number;
  rescaleIntercept: number;
  windowCenter?: number;
  windowWidth?: number;
}

let scratch = Buffer.alloc(0);

/**
 * Calls `use` with the first frame of `file` when the fast path can read it, and returns its result;
 * undefined when the file needs the general decoder. The frame's bytes live in a buffer reused by the
 * next call, so `use` must not keep them; reading is synchronous for the same reason (no other call
 * can interleave).
 */
export function withNativeGreyFrame<T>(
  file: string,
  use: (frame: NativeGreyFrame) => T,
  limits: DecodeLimits = decodeLimits(),
): T | undefined {
  if (endianness() !== 'LE') return undefined;
  const bytes = readIntoScratch(file, limits);
  if (!bytes) return undefined;
  const frame = indexFrame(bytes, limits);
  return frame ? use(frame) : undefined;
}

function readIntoScratch(file: string, limits: DecodeLimits): Uint8Array | undefined {
  let fd: number;
  try {
    // Non-blocking, so that a FIFO put in a file's place cannot hang the thread (fstat refuses it next).
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch {
    return undefined; // the general path reports it
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile() || stat.size > Math.min(SCRATCH_MAX_BYTES, limits.maxFileBytes)) return undefined;
    const size = stat.size;
    if (scratch.length < size) {
      scratch = Buffer.allocUnsafeSlow(Math.min(SCRATCH_MAX_BYTES, Math.max(size, 2 * scratch.length)));
    }
    let done = 0;
    while (done < size) {
      const n = readSync(fd, scratch, done, size - done, done);
      if (n === 0) return undefined; // shrank under us
      done += n;
    }
    return scratch.subarray(0, size);
  } finally {
    closeSync(fd);
  }
}

function indexFrame(bytes: Uint8Array, limits: DecodeLimits): NativeGreyFrame | undefined {
  let ds: dicomParser.DataSet;
  try {
    ds = dicomParser.parseDicom(bytes, { untilTag: 'x7fe00010' });
  } catch {
    return undefined;
  }
  const transferSyntaxUid = ds.string('x00020010');
  if (!transferSyntaxUid || !LE_NATIVE.has(transferSyntaxUid)) return undefined;
  if (ENHANCED_GROUPS.some((tag) => ds.elements[tag])) return undefined;
  const pixelData = ds.elements.x7fe00010;
  if (!pixelData || pixelData.encapsulatedPixelData || pixelData.hadUndefinedLength) return undefined;

  const attributes = naturalized(ds);
  if (!attributes) return undefined;
  let header: PixelHeader;
  try {
    header = readHeader(attributes, transferSyntaxUid, limits);
  } catch {
    return undefined;
  }
  if (header.samplesPerPixel !== 1 || header.bitsAllocated === 32) return undefined;
  if (header.photometric !== 'MONOCHROME1' && header.photometric !== 'MONOCHROME2') return undefined;
  const frameBytes = frameByteLength(header);
  // Short or truncated Pixel Data: the general path says which.
  if (pixelData.length < frameBytes * header.frames) return undefined;
  if (pixelData.dataOffset + frameBytes * header.frames > bytes.byteLength) return undefined;

  const { slope, intercept } = rescaleFor(attributes, 0);
  return {
    header,
    bytes: bytes.subarray(pixelData.dataOffset, pixelData.dataOffset + frameBytes),
    rescaleSlope: slope,
    rescaleIntercept: intercept,
    ...windowFor(attributes),
  };
}

const US_TAGS = {
  Rows: 'x00280010',
  Columns: 'x00280011',
  SamplesPerPixel: 'x00280002',
  BitsAllocated: 'x00280100',
  BitsStored: 'x00280101',
  HighBit: 'x00280102',
  PixelRepresentation: 'x00280103',
  PlanarConfiguration: 'x00280006',
} as const;

const DS = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const UID = /^[0-9.]{1,64}$/;
const CODE = /^[A-Z0-9_ ]{0,16}$/;

/** Attributes read as strings, each with the form a value must have for the fast path to take it. */
const STRING_TAGS = {
  SOPClassUID: { tag: 'x00080016', value: UID },
  Modality: { tag: 'x00080060', value: CODE },
  BodyPartExamined: { tag: 'x00180015', value: CODE },
  PhotometricInterpretation: { tag: 'x00280004', value: CODE },
  NumberOfFrames: { tag: 'x00280008', value: /^[+-]?\d{1,12}$/ },
  RescaleSlope: { tag: 'x00281053', value: DS },
  RescaleIntercept: { tag: 'x00281052', value: DS },
  WindowCenter: { tag: 'x00281050', value: DS },
  WindowWidth: { tag: 'x00281051', value: DS },
} as const;

/**
 * The attributes decode.ts reads, named as dcmjs names them, so the same validation applies on both
 * paths. A US element that is not exactly one value is left to the general path.
 */
function naturalized(ds: dicomParser.DataSet): Dataset | undefined {
  const out: Dataset = {};
  for (const [keyword, tag] of Object.entries(US_TAGS)) {
    const element = ds.elements[tag];
    if (!element) continue;
    if (element.length !== 2 || (element.vr !== undefined && element.vr !== 'US')) return undefined;
    out[keyword] = ds.uint16(tag);
  }
  for (const [keyword, { tag, value: pattern }] of Object.entries(STRING_TAGS)) {
    const element = ds.elements[tag];
    if (!element || element.length === 0) continue;
    const raw = Buffer.from(ds.byteArray.buffer, ds.byteArray.byteOffset + element.dataOffset, element.length)
      .toString('latin1')
      .replace(pattern === UID ? /[\0 ]+$/ : / +$/, ''); // UI pads with NUL, the others with a space
    if (raw === '') continue;
    // Only values dcmjs reads the same way: anything odd (NUL padding, stray characters, which dcmjs
    // strips or keeps in its own way) is left to the general path.
    const values = raw.split('\\').map((v) => v.trim());
    if (!values.every((v) => pattern.test(v))) return undefined;
    out[keyword] = values;
  }
  return out;
}
