import { readFile, stat } from 'node:fs/promises';
import dcmjs from 'dcmjs';
import dcmjsCodecs from 'dcmjs-codecs';
import { Decoder as JpegLosslessDecoder } from 'jpeg-lossless-decoder-js';
import { errorMessage } from '../observability/error-message.ts';
import {
  first,
  frameGeometry,
  frameGroupValue,
  toNumber,
  type Dataset,
  type SliceGeometry,
} from '../dicom/functional-groups.ts';
import {
  DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
  EXPLICIT_VR_BIG_ENDIAN,
  EXPLICIT_VR_LITTLE_ENDIAN,
  pixelDecoderFor,
} from '../dicom/transfer-syntax.ts';
import { decodeJpegExtended, JpegDataError } from './codecs/jpeg-extended.ts';
import { DecodeError, UnsupportedTransferSyntaxError } from './decode-error.ts';
import {
  codestreamKind,
  readEncapsulatedItems,
  readUint64s,
  splitFrames,
  type FrameTables,
} from './encapsulation.ts';

// Part-10 file → pixel frames as numbers. dcmjs parses (and inflates Deflated Explicit VR LE itself);
// dcmjs-codecs (WebAssembly) decompresses the encapsulated transfer syntaxes and swaps big endian;
// jpeg-lossless-decoder-js covers JPEG lossless process 14 with any predictor (.4.57), which
// dcmjs-codecs lacks; JPEG extended (.4.51, 8 or 12-bit greyscale) goes through our own decoder
// because no package decodes 12-bit JPEG (jpeg-extended.ts).
// Encapsulated pixel data is split into frames by one splitter (encapsulation.ts: offset tables, else
// code stream markers) and each decoder is handed one code stream per frame.
// Everything that sizes an allocation is validated against limits first: the files are hostile input.

const { NativeCodecs, Transcoder } = dcmjsCodecs;

// dcmjs and dcmjs-codecs warn on console for every odd VR; our own errors carry what matters.
// (dcmjs's validation logger reports those odd VRs at error level, so it is silenced outright.)
dcmjs.log.setLevel('error');
dcmjs.log.getLogger('validation.dcmjs').setLevel('silent');
dcmjsCodecs.log.setLevel('error');

export { DecodeError, UnsupportedTransferSyntaxError };

export interface DecodeLimits {
  /** Largest Rows or Columns accepted. */
  maxDimension: number;
  maxFrames: number;
  /** Largest decoded pixel data (all frames, stored bytes) accepted. */
  maxPixelBytes: number;
  /** Most samples (rows × columns × samples per pixel × frames), each a float32 once decoded. */
  maxSamples: number;
  maxFileBytes: number;
  /**
   * The codec WebAssembly memory grows to hold the largest frame it has decoded and never shrinks (nor
   * gives back pages it touched): after a codec decode with a frame larger than this, or that grew the
   * memory by more than this, the codec module is dropped and a fresh one made on next use.
   */
  codecMemoryResetBytes: number;
}

export const DEFAULT_LIMITS: Readonly<DecodeLimits> = Object.freeze({
  maxDimension: 16384,
  maxFrames: 4096,
  /** config worker.maxDecodedImageBytes sets it for the worker (same default). */
  maxPixelBytes: 512 * 1024 * 1024,
  maxSamples: Number.POSITIVE_INFINITY,
  maxFileBytes: 2 * 1024 * 1024 * 1024 - 1,
  codecMemoryResetBytes: 64 * 1024 * 1024,
});

let configuredLimits: DecodeLimits = { ...DEFAULT_LIMITS };

/** Limits used when a call names none (per thread: decode threads are set up by the pool). */
export function setDecodeLimits(limits: Partial<DecodeLimits>): void {
  configuredLimits = { ...DEFAULT_LIMITS, ...limits };
}

export function decodeLimits(): DecodeLimits {
  return configuredLimits;
}

/** The limits that config worker.maxDecodedImageBytes stands for. */
export function limitsForMaxImageBytes(maxDecodedImageBytes: number): Partial<DecodeLimits> {
  return {
    maxPixelBytes: maxDecodedImageBytes,
    codecMemoryResetBytes: Math.min(DEFAULT_LIMITS.codecMemoryResetBytes, maxDecodedImageBytes),
  };
}

export interface PixelHeader {
  transferSyntaxUid: string;
  sopClassUid?: string;
  modality?: string;
  bodyPart?: string;
  rows: number;
  columns: number;
  frames: number;
  samplesPerPixel: number;
  /** After decoding: colour images are always 'RGB'. */
  photometric: string;
  bitsAllocated: number;
  bitsStored: number;
  highBit: number;
  pixelRepresentation: number;
  planarConfiguration: number;
}

export interface StoredPixels {
  header: PixelHeader;
  /** Stored values, little endian, one view per decoded frame. */
  frames: Uint8Array[];
  /** The naturalized data set without Pixel Data (rescale, window and functional groups live here). */
  attributes: Record<string, unknown>;
}

export interface DecodedImage extends PixelHeader {
  /** One array per decoded frame, rows × columns × samplesPerPixel (interleaved), modality LUT applied if asked. */
  pixels: Float32Array[];
  modalityLutApplied: boolean;
  /** First frame's Rescale Slope/Intercept (1/0 when absent). */
  rescaleSlope: number;
  rescaleIntercept: number;
  /** First Window Center/Width value for the first frame, if the file has one. */
  windowCenter?: number;
  windowWidth?: number;
  /** Where the first frame lies in the patient (absent when the file does not say). */
  geometry?: SliceGeometry;
  /** Where each decoded frame lies (enhanced multi-frame: its functional groups); undefined if unknown. */
  frameGeometries?: (SliceGeometry | undefined)[];
}

export type { SliceGeometry };

export interface DecodeOptions {
  /** 'first' (default) decodes frame 1 only into floats; 'all' every frame. */
  frames?: 'first' | 'all';
  /** Apply Rescale Slope/Intercept (default true). */
  modalityLut?: boolean;
  limits?: Partial<DecodeLimits>;
}

export type { Dataset };

let codecsReady: Promise<void> | undefined;
/** The memory a fresh codec module starts with (its initial pages: 256 MiB reserved, mostly untouched). */
let codecBaselineBytes = 0;
/** Resolves once the codec module is up; callers then decode synchronously (nothing can release it between). */
async function initCodecs(): Promise<void> {
  while (!NativeCodecs.isInitialized()) {
    codecsReady ??= NativeCodecs.initializeAsync().then(() => {
      codecBaselineBytes = codecMemoryBytes();
    });
    await codecsReady;
  }
}

interface CodecMemory {
  wasmApi?: { wasmMemory?: WebAssembly.Memory };
}

/** Bytes of WebAssembly memory the codec module holds now (0 when it is not loaded). */
export function codecMemoryBytes(): number {
  return (NativeCodecs as unknown as CodecMemory).wasmApi?.wasmMemory?.buffer.byteLength ?? 0;
}

let codecResets = 0;
/** How many times this thread's codec module was dropped for having grown past the limit. */
export function codecResetCount(): number {
  return codecResets;
}

/**
 * Drops the codec module after an outsized decode (a frame over the limit, or memory grown by more than
 * it); the next decode loads a fresh one, and the old memory goes with its instance.
 */
function resetCodecsIfOutsized(header: PixelHeader, limits: DecodeLimits): void {
  const grown = codecMemoryBytes() - codecBaselineBytes;
  if (frameByteLength(header) <= limits.codecMemoryResetBytes && grown <= limits.codecMemoryResetBytes)
    return;
  NativeCodecs.release();
  codecsReady = undefined;
  codecResets++;
}

export async function decodeImage(file: string, opts: DecodeOptions = {}): Promise<DecodedImage> {
  const limits = { ...configuredLimits, ...opts.limits };
  const info = await stat(file);
  if (!info.isFile()) throw new DecodeError(`${file} is not a regular file`);
  if (info.size > limits.maxFileBytes) {
    throw new DecodeError(`file is ${info.size} bytes, over the ${limits.maxFileBytes}-byte limit`);
  }
  return decodeImageBytes(await readFile(file), opts);
}

/** decodeImage over a Part-10 file already in memory (read from an object store, say). */
export async function decodeImageBytes(bytes: Uint8Array, opts: DecodeOptions = {}): Promise<DecodedImage> {
  const limits = { ...configuredLimits, ...opts.limits };
  if (bytes.byteLength > limits.maxFileBytes)
    throw new DecodeError(`file is ${bytes.byteLength} bytes, over the ${limits.maxFileBytes}-byte limit`);
  await initCodecs();
  return toImage(readStoredPixelsSync(bytes, limits, opts.frames === 'all' ? 'all' : 'first'), opts);
}

/** Decompressed stored pixel values, for callers (and tests) that need the raw samples. */
export async function readStoredPixels(
  bytes: Uint8Array,
  limits: Partial<DecodeLimits> = {},
): Promise<StoredPixels> {
  await initCodecs();
  return readStoredPixelsSync(bytes, { ...configuredLimits, ...limits }, 'all');
}

function readStoredPixelsSync(bytes: Uint8Array, limits: DecodeLimits, which: 'first' | 'all'): StoredPixels {
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  // Encapsulated Pixel Data is not read by dcmjs at all (it would trust the Basic Offset Table): the
  // data set is parsed up to it, the header checked, and only then are its items read, bounds-checked.
  const head = parseHead(buffer);
  const { transferSyntaxUid } = head;
  if (!head.hasPixelData) {
    const other = 'FloatPixelData' in head.dataset || 'DoubleFloatPixelData' in head.dataset;
    throw new DecodeError(
      other ? 'float pixel data is not supported' : 'the data set has no Pixel Data (7FE0,0010)',
    );
  }
  const header = readHeader(head.dataset, transferSyntaxUid, limits);
  const frameCount = which === 'first' ? 1 : header.frames;

  let pixelData: unknown;
  const decoder = pixelDecoderFor(transferSyntaxUid);
  if (decoder === undefined) throw new UnsupportedTransferSyntaxError(transferSyntaxUid);
  if (head.pixelDataItemsAt === undefined) {
    if (decoder === 'native') {
      if (transferSyntaxUid !== DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN) {
        checkNotTruncated(
          bytes,
          frameByteLength(header) * header.frames,
          transferSyntaxUid === EXPLICIT_VR_LITTLE_ENDIAN,
        );
      }
      pixelData = head.dataset.PixelData;
    } else {
      // Big endian: dcmjs-codecs swaps the words (native, one buffer).
      pixelData = transcode(new Transcoder(buffer), transferSyntaxUid, header, limits);
    }
  } else {
    const codestreams = encapsulatedFrames(new Uint8Array(buffer), head, header).slice(0, frameCount);
    if (decoder === 'jpeg-lossless') pixelData = decodeJpegLossless(codestreams, header);
    else if (decoder === 'jpeg-extended') pixelData = decodeJpegExtendedFrames(codestreams, header);
    else if (decoder === 'codec') {
      // One code stream per frame, each its own fragment: what dcmjs-codecs can take (it cannot
      // split frames spanning fragments itself).
      const elements = {
        ...head.dataset,
        NumberOfFrames: codestreams.length,
        PixelData: codestreams.map((c) => c.slice().buffer),
      };
      pixelData = transcode(new Transcoder(elements, transferSyntaxUid), transferSyntaxUid, header, limits);
    } else throw new UnsupportedTransferSyntaxError(transferSyntaxUid);
  }

  const data = concatFragments(pixelData);
  const frameBytes = frameByteLength(header);
  if (data.byteLength < frameBytes * frameCount) {
    throw new DecodeError(
      `pixel data holds ${data.byteLength} bytes, fewer than Rows×Columns×Samples×Bits×Frames needs (${frameBytes * frameCount})`,
    );
  }
  const frames: Uint8Array[] = [];
  for (let i = 0; i < frameCount; i++) frames.push(data.subarray(i * frameBytes, (i + 1) * frameBytes));
  const { PixelData: _pixels, ...attributes } = head.dataset;
  return { header, frames, attributes };
}

type TranscoderInstance = InstanceType<typeof Transcoder>;

/** dcmjs-codecs to explicit VR little endian; its memory is given back afterwards if it grew too much. */
function transcode(
  transcoder: TranscoderInstance,
  transferSyntaxUid: string,
  header: PixelHeader,
  limits: DecodeLimits,
): unknown {
  let elements: Dataset;
  try {
    transcoder.transcode(EXPLICIT_VR_LITTLE_ENDIAN);
    elements = transcoder.getElements();
  } catch (err) {
    const msg = errorMessage(err);
    if (/not supported/i.test(msg)) throw new UnsupportedTransferSyntaxError(transferSyntaxUid);
    throw new DecodeError(`could not decode ${transferSyntaxUid} pixel data: ${msg}`);
  } finally {
    resetCodecsIfOutsized(header, limits);
  }
  // Decoders may change the colour model (JPEG YBR → RGB) and the planar layout.
  header.photometric = str(elements.PhotometricInterpretation) ?? header.photometric;
  header.planarConfiguration = num(elements.PlanarConfiguration) ?? header.planarConfiguration;
  return elements.PixelData;
}

interface ParsedHead {
  transferSyntaxUid: string;
  meta: Dataset;
  /** Naturalized; for encapsulated syntaxes without Pixel Data (nor anything after it). */
  dataset: Dataset;
  hasPixelData: boolean;
  /** Encapsulated syntaxes: where the Basic Offset Table item starts in the file. */
  pixelDataItemsAt?: number;
}

const EXPLICIT_LE = EXPLICIT_VR_LITTLE_ENDIAN;
const PIXEL_DATA = '7FE00010';

/** Whether a syntax's Pixel Data is encapsulated (every decoder but 'native' and big endian's swap). */
function isEncapsulated(transferSyntaxUid: string): boolean {
  const decoder = pixelDecoderFor(transferSyntaxUid);
  return decoder !== undefined && decoder !== 'native' && transferSyntaxUid !== EXPLICIT_VR_BIG_ENDIAN;
}

function parseHead(buffer: ArrayBuffer): ParsedHead {
  const { DicomMessage, DicomMetaDictionary, ReadBufferStream } = dcmjs.data;
  const naturalize = DicomMetaDictionary.naturalizeDataset;
  try {
    // The meta group as dcmjs's readFile reads it (explicit VR LE, told by its group length).
    const stream = new ReadBufferStream(buffer);
    stream.reset();
    stream.increment(128);
    if (stream.readAsciiString(4) !== 'DICM')
      throw new Error('Invalid DICOM file, expected header is missing');
    const groupLength = DicomMessage._readTag(stream, EXPLICIT_LE);
    if (groupLength.tag.toCleanString() !== '00020000') {
      throw new Error('Invalid DICOM file, meta length tag is malformed or not present.');
    }
    const meta = naturalize(DicomMessage._read(stream.more(groupLength.values[0]), EXPLICIT_LE, {}));
    const transferSyntaxUid = String(first(meta.TransferSyntaxUID) ?? '').replace(/[\0 ]+$/, '');
    if (!transferSyntaxUid) throw new DecodeError('the file meta information has no Transfer Syntax UID');
    if (!isEncapsulated(transferSyntaxUid)) {
      const whole = parse(buffer, {});
      return { transferSyntaxUid, meta, dataset: whole.dataset, hasPixelData: 'PixelData' in whole.dataset };
    }
    // Encapsulated syntaxes are explicit VR little endian. Stop right after the top-level Pixel Data
    // tag (items of nested sequences are read without this option, so an icon's Pixel Data is not it).
    const dict = DicomMessage._read(stream, EXPLICIT_LE, {
      untilTag: PIXEL_DATA,
      includeUntilTagValue: false,
    });
    const hasPixelData = PIXEL_DATA in dict;
    delete dict[PIXEL_DATA];
    const dataset = naturalize(dict);
    if (!hasPixelData) return { transferSyntaxUid, meta, dataset, hasPixelData };
    const at = stream.offset as number;
    const bytes = new Uint8Array(buffer);
    if (at + 8 > bytes.byteLength)
      throw new DecodeError('the file ends inside the Pixel Data element header');
    const vr = String.fromCharCode(bytes[at]!, bytes[at + 1]!);
    const length = new DataView(buffer).getUint32(at + 4, true);
    if ((vr !== 'OB' && vr !== 'OW') || length !== 0xffffffff) {
      throw new DecodeError(
        `Pixel Data is not encapsulated (VR ${vr}, length ${length}) though transfer syntax ${transferSyntaxUid} requires it`,
      );
    }
    return { transferSyntaxUid, meta, dataset, hasPixelData, pixelDataItemsAt: at + 8 };
  } catch (err) {
    if (err instanceof DecodeError) throw err;
    throw new DecodeError(`not a readable DICOM Part-10 file: ${errorMessage(err)}`);
  }
}

/** One code stream per frame, from the file's encapsulated items and offset tables (encapsulation.ts). */
function encapsulatedFrames(bytes: Uint8Array, head: ParsedHead, header: PixelHeader): Uint8Array[] {
  const items = readEncapsulatedItems(bytes, head.pixelDataItemsAt!);
  const tables: FrameTables = {};
  const eot = binaryValue(head.dataset.ExtendedOffsetTable);
  const eotLengths = binaryValue(head.dataset.ExtendedOffsetTableLengths);
  if (eot) tables.extendedOffsets = readUint64s(eot, 'the Extended Offset Table');
  if (eotLengths) tables.extendedLengths = readUint64s(eotLengths, 'the Extended Offset Table Lengths');
  return splitFrames(items, header.frames, codestreamKind(header.transferSyntaxUid), tables);
}

/** A binary element's bytes as dcmjs naturalizes them (an ArrayBuffer, or a list of them). */
function binaryValue(value: unknown): Uint8Array | undefined {
  if (value === undefined || value === null) return undefined;
  const parts = (Array.isArray(value) ? value : [value]).filter(
    (p): p is ArrayBuffer | ArrayBufferView => p instanceof ArrayBuffer || ArrayBuffer.isView(p),
  );
  if (parts.length === 0) return undefined;
  return concatFragments(parts);
}

function parse(buffer: ArrayBuffer, options: Record<string, unknown>): { meta: Dataset; dataset: Dataset } {
  try {
    const message = dcmjs.data.DicomMessage.readFile(buffer, options);
    const naturalize = dcmjs.data.DicomMetaDictionary.naturalizeDataset;
    return { meta: naturalize(message.meta), dataset: naturalize(message.dict) };
  } catch (err) {
    throw new DecodeError(`not a readable DICOM Part-10 file: ${errorMessage(err)}`);
  }
}

export function readHeader(ds: Dataset, transferSyntaxUid: string, limits: DecodeLimits): PixelHeader {
  const rows = requireInt(ds, 'Rows', 1, limits.maxDimension);
  const columns = requireInt(ds, 'Columns', 1, limits.maxDimension);
  const samplesPerPixel = optionalInt(ds, 'SamplesPerPixel', 1, 3) ?? 1;
  if (samplesPerPixel !== 1 && samplesPerPixel !== 3)
    throw new DecodeError(`SamplesPerPixel ${samplesPerPixel} is not 1 or 3`);
  const bitsAllocated = requireInt(ds, 'BitsAllocated', 1, 32);
  if (![8, 16, 32].includes(bitsAllocated))
    throw new DecodeError(`BitsAllocated ${bitsAllocated} is not supported`);
  const bitsStored = optionalInt(ds, 'BitsStored', 1, bitsAllocated) ?? bitsAllocated;
  const highBit = optionalInt(ds, 'HighBit', bitsStored - 1, bitsAllocated - 1) ?? bitsStored - 1;
  const frames = optionalInt(ds, 'NumberOfFrames', 1, limits.maxFrames) ?? 1;
  const photometric = str(ds.PhotometricInterpretation) ?? (samplesPerPixel === 1 ? 'MONOCHROME2' : 'RGB');
  const header: PixelHeader = {
    transferSyntaxUid,
    sopClassUid: str(ds.SOPClassUID),
    modality: str(ds.Modality),
    bodyPart: str(ds.BodyPartExamined),
    rows,
    columns,
    frames,
    samplesPerPixel,
    photometric,
    bitsAllocated,
    bitsStored,
    highBit,
    pixelRepresentation: optionalInt(ds, 'PixelRepresentation', 0, 1) ?? 0,
    planarConfiguration: optionalInt(ds, 'PlanarConfiguration', 0, 1) ?? 0,
  };
  const samples = rows * columns * samplesPerPixel * frames;
  if (samples > limits.maxSamples) {
    throw new DecodeError(
      `${rows}×${columns}×${samplesPerPixel}×${frames} frames is ${samples} samples, over the ${limits.maxSamples}-sample limit`,
    );
  }
  const total = frameByteLength(header) * frames;
  if (total > limits.maxPixelBytes) {
    throw new DecodeError(
      `${rows}×${columns}×${samplesPerPixel}×${frames} frames at ${bitsAllocated} bits is ${total} bytes, over the ${limits.maxPixelBytes}-byte limit`,
    );
  }
  return header;
}

/** Each encapsulated frame through the pure-JS lossless decoder, back to little-endian stored bytes. */
function decodeJpegLossless(codestreams: Uint8Array[], header: PixelHeader): Uint8Array[] {
  const bytesPerSample = header.bitsAllocated / 8;
  const expected = frameByteLength(header);
  return codestreams.map((frame, i) => {
    let decoded: Uint8Array | Uint16Array;
    try {
      const copy = frame.slice().buffer;
      decoded = new JpegLosslessDecoder().decode(copy, 0, copy.byteLength, bytesPerSample);
    } catch (err) {
      throw new DecodeError(`JPEG lossless frame ${i + 1} could not be decoded: ${errorMessage(err)}`);
    }
    if (decoded.byteLength !== expected) {
      throw new DecodeError(
        `JPEG lossless frame ${i + 1} holds ${decoded.byteLength} bytes, the header needs ${expected}`,
      );
    }
    return decoded instanceof Uint8Array ? decoded : littleEndianWords(decoded);
  });
}

/** Each encapsulated frame through the JPEG extended decoder, as little-endian stored values. */
function decodeJpegExtendedFrames(codestreams: Uint8Array[], header: PixelHeader): Uint8Array[] {
  if (header.samplesPerPixel !== 1) {
    throw new DecodeError('JPEG extended colour images are not supported (greyscale only)');
  }
  return codestreams.map((frame, i) => {
    let samples: Uint16Array;
    let precision: number;
    try {
      ({ samples, precision } = decodeJpegExtended(frame, { rows: header.rows, columns: header.columns }));
    } catch (err) {
      if (!(err instanceof JpegDataError)) throw err;
      throw new DecodeError(`JPEG extended frame ${i + 1} could not be decoded: ${err.message}`);
    }
    if (header.bitsAllocated === 8) {
      if (precision !== 8) {
        throw new DecodeError(
          `JPEG extended frame ${i + 1} has ${precision}-bit samples, Bits Allocated is 8`,
        );
      }
      return Uint8Array.from(samples);
    }
    return littleEndianWords(samples);
  });
}

/** 16-bit samples in platform order → little-endian stored bytes. */
function littleEndianWords(words: Uint16Array): Uint8Array {
  const out = new Uint8Array(words.length * 2);
  const view = new DataView(out.buffer);
  for (let j = 0; j < words.length; j++) view.setUint16(j * 2, words[j]!, true);
  return out;
}

const PIXEL_DATA_TAG = Buffer.from([0xe0, 0x7f, 0x10, 0x00]);

/**
 * dcmjs zero-fills a value that runs past the end of the file, which would turn a truncated upload
 * into a plausible image. For native encodings the value bytes are in the file as they are: some
 * (7FE0,0010) header must declare at least `expected` bytes that the file really holds.
 */
function checkNotTruncated(bytes: Uint8Array, expected: number, explicitVr: boolean): void {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let fits = false;
  let overflows = false;
  for (let pos = buf.indexOf(PIXEL_DATA_TAG); pos >= 0 && !fits; pos = buf.indexOf(PIXEL_DATA_TAG, pos + 1)) {
    let length: number;
    let headerLength: number;
    if (explicitVr) {
      const vr = buf.toString('latin1', pos + 4, pos + 6);
      if ((vr !== 'OW' && vr !== 'OB') || pos + 12 > buf.length || buf.readUInt16LE(pos + 6) !== 0) continue;
      length = buf.readUInt32LE(pos + 8);
      headerLength = 12;
    } else {
      if (pos + 8 > buf.length) continue;
      length = buf.readUInt32LE(pos + 4);
      headerLength = 8;
    }
    if (length === 0xffffffff || length < expected) continue;
    if (pos + headerLength + length <= buf.length) fits = true;
    else overflows = true;
  }
  if (!fits && overflows) {
    throw new DecodeError('Pixel Data is truncated: the file ends before the bytes its header declares');
  }
}

export function frameByteLength(h: PixelHeader): number {
  return h.rows * h.columns * h.samplesPerPixel * (h.bitsAllocated / 8);
}

function toImage(stored: StoredPixels, opts: DecodeOptions): DecodedImage {
  const h = stored.header;
  const applyLut = opts.modalityLut ?? true;
  const wanted = opts.frames === 'all' ? stored.frames : stored.frames.slice(0, 1);
  const photometric = h.samplesPerPixel === 3 ? 'RGB' : h.photometric;
  if (h.samplesPerPixel === 1 && h.photometric !== 'MONOCHROME1' && h.photometric !== 'MONOCHROME2') {
    throw new DecodeError(`photometric interpretation ${h.photometric} with one sample is not supported`);
  }
  if (h.samplesPerPixel === 3 && h.photometric !== 'RGB' && h.photometric !== 'YBR_FULL') {
    throw new DecodeError(`photometric interpretation ${h.photometric} is not supported`);
  }
  // Rescale per frame: enhanced multi-frame objects carry it in functional groups.
  const perFrame = wanted.map((_, i) => rescaleFor(stored.attributes, i));
  const pixels = wanted.map((bytes, i) => {
    const values = samples(bytes, h);
    const { slope, intercept } = perFrame[i]!;
    if (applyLut && (slope !== 1 || intercept !== 0)) {
      for (let j = 0; j < values.length; j++) values[j] = values[j]! * slope + intercept;
    }
    return h.samplesPerPixel === 3 ? toRgbInterleaved(values, h) : values;
  });
  const voi = windowFor(stored.attributes);
  const frameGeometries = wanted.map((_, i) => frameGeometry(stored.attributes, i));
  const geometry = frameGeometries[0];
  return {
    ...(geometry ? { geometry } : {}),
    frameGeometries,
    ...h,
    photometric,
    planarConfiguration: 0,
    pixels,
    modalityLutApplied: applyLut,
    rescaleSlope: perFrame[0]?.slope ?? 1,
    rescaleIntercept: perFrame[0]?.intercept ?? 0,
    ...voi,
  };
}

/** Stored words → numbers: bits outside Bits Stored masked off, two's complement when signed. */
function samples(bytes: Uint8Array, h: PixelHeader): Float32Array {
  const n = bytes.byteLength / (h.bitsAllocated / 8);
  const out = new Float32Array(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const shift = h.highBit + 1 - h.bitsStored;
  const signed = h.pixelRepresentation === 1;
  if (h.bitsAllocated === 32) {
    for (let i = 0; i < n; i++) {
      const word = view.getUint32(i * 4, true);
      const v = h.bitsStored === 32 ? word : Math.floor(word / 2 ** shift) % 2 ** h.bitsStored;
      out[i] = signed && v >= 2 ** (h.bitsStored - 1) ? v - 2 ** h.bitsStored : v;
    }
    return out;
  }
  const mask = (1 << h.bitsStored) - 1;
  const signBit = 1 << (h.bitsStored - 1);
  const range = 1 << h.bitsStored;
  for (let i = 0; i < n; i++) {
    const word = h.bitsAllocated === 16 ? view.getUint16(i * 2, true) : bytes[i]!;
    const v = (word >> shift) & mask;
    out[i] = signed && v & signBit ? v - range : v;
  }
  return out;
}

function toRgbInterleaved(values: Float32Array, h: PixelHeader): Float32Array {
  const n = h.rows * h.columns;
  const out = new Float32Array(n * 3);
  const planar = h.planarConfiguration === 1;
  const ybr = h.photometric === 'YBR_FULL';
  const mid = 2 ** (h.bitsStored - 1);
  for (let p = 0; p < n; p++) {
    const a = planar ? values[p]! : values[p * 3]!;
    const b = planar ? values[n + p]! : values[p * 3 + 1]!;
    const c = planar ? values[2 * n + p]! : values[p * 3 + 2]!;
    if (ybr) {
      // PS3.3 C.7.6.3.1.2 YBR_FULL → RGB.
      out[p * 3] = a + 1.402 * (c - mid);
      out[p * 3 + 1] = a - 0.344136 * (b - mid) - 0.714136 * (c - mid);
      out[p * 3 + 2] = a + 1.772 * (b - mid);
    } else {
      out[p * 3] = a;
      out[p * 3 + 1] = b;
      out[p * 3 + 2] = c;
    }
  }
  return out;
}

export function rescaleFor(ds: Dataset, frame: number): { slope: number; intercept: number } {
  return {
    slope: num(frameGroupValue(ds, frame, 'PixelValueTransformationSequence', 'RescaleSlope')) ?? 1,
    intercept: num(frameGroupValue(ds, frame, 'PixelValueTransformationSequence', 'RescaleIntercept')) ?? 0,
  };
}

/** The first VOI window of the first frame; a width below 1 is no window (PS3.3 C.11.2.1.2). */
export function windowFor(ds: Dataset): { windowCenter?: number; windowWidth?: number } {
  const center = num(frameGroupValue(ds, 0, 'FrameVOILUTSequence', 'WindowCenter'));
  const width = num(frameGroupValue(ds, 0, 'FrameVOILUTSequence', 'WindowWidth'));
  return center !== undefined && width !== undefined && width >= 1
    ? { windowCenter: center, windowWidth: width }
    : {};
}

function concatFragments(value: unknown): Uint8Array {
  const parts = (Array.isArray(value) ? value : [value]).filter(
    (p): p is ArrayBuffer | ArrayBufferView => p instanceof ArrayBuffer || ArrayBuffer.isView(p),
  );
  if (parts.length === 0) throw new DecodeError('Pixel Data is empty');
  const views = parts.map((p) =>
    p instanceof ArrayBuffer ? new Uint8Array(p) : new Uint8Array(p.buffer, p.byteOffset, p.byteLength),
  );
  if (views.length === 1) return views[0]!;
  const out = new Uint8Array(views.reduce((s, v) => s + v.byteLength, 0));
  let offset = 0;
  for (const v of views) {
    out.set(v, offset);
    offset += v.byteLength;
  }
  return out;
}

function str(value: unknown): string | undefined {
  const v = first(value);
  if (v === undefined || v === null) return undefined;
  const s = String(v).trim();
  return s === '' ? undefined : s;
}

function num(value: unknown): number | undefined {
  return toNumber(first(value));
}

function optionalInt(ds: Dataset, key: string, min: number, max: number): number | undefined {
  if (ds[key] === undefined || ds[key] === null || ds[key] === '') return undefined;
  return requireInt(ds, key, min, max);
}

function requireInt(ds: Dataset, key: string, min: number, max: number): number {
  const v = num(ds[key]);
  if (v === undefined) throw new DecodeError(`${key} is missing or not a number`);
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new DecodeError(`${key} ${v} is outside the accepted range ${min}..${max}`);
  }
  return v;
}
