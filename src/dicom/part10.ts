// DICOM Part-10 file helpers: write the preamble + file meta header in front of a streamed dataset,
// and read the header attributes of a stored file without loading its pixel data.
import { open } from 'node:fs/promises';
import { createInflateRaw } from 'node:zlib';
import dcmjs from 'dcmjs';
import {
  DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
  EXPLICIT_VR_BIG_ENDIAN,
  EXPLICIT_VR_LITTLE_ENDIAN,
  IMPLICIT_VR_LITTLE_ENDIAN,
} from './transfer-syntax.ts';
import { errorMessage } from '../util/error-message.ts';
import { requireUid, uidFromName } from './uid.ts';
import {
  cleanText,
  firstIntegerString,
  firstPersonName,
  firstText,
  firstUid,
  firstUnsignedShort,
  isPlainAscii,
} from './plain-values.ts';

/** Our Implementation Class UID (PS3.7 D.3.3.2): stable, derived from the product name under 2.25. */
export const IMPLEMENTATION_CLASS_UID = uidFromName('dicom-ai-gateway');
/** Implementation Version Name (SH, at most 16 characters). */
export const IMPLEMENTATION_VERSION_NAME = 'AIGW_0_1';

const PREAMBLE_LENGTH = 128;
const MAGIC = Buffer.from('DICM', 'ascii');
/** Explicit VR elements whose length field is 32-bit (with two reserved bytes before it). */
const LONG_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'UC', 'UN', 'UR', 'UT']);

export class Part10Error extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'Part10Error';
  }
}

/** A deflated data set that inflates to more than the limit: too large, rather than unreadable. */
export class InflatedTooLargeError extends Part10Error {
  constructor(limit: number) {
    super(`deflated data set inflates to more than ${limit} bytes`);
    this.name = 'InflatedTooLargeError';
  }
}

/** AE title (PS3.5 VR AE): 1–16 characters of the default repertoire, no backslash or control characters. */
export function normaliseAeTitle(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  const trimmed = value.replace(/\0+$/, '').trim();
  if (trimmed.length === 0 || trimmed.length > 16) return undefined;
  return /^[\x20-\x5b\x5d-\x7e]+$/.test(trimmed) ? trimmed : undefined;
}

export interface FileMetaInput {
  sopClassUid: string;
  sopInstanceUid: string;
  transferSyntaxUid: string;
  /** Calling AE title of the sender; omitted from the header when it is not a valid AE title. */
  sourceAeTitle?: string;
}

/**
 * Preamble + 'DICM' + group 0002 (always explicit VR little endian, PS3.10 §7.1) as one Buffer.
 *
 * Hand-encoded on purpose: the dataset that follows is streamed byte for byte as the sender sent it.
 * dcmjs can only write a whole file by re-encoding the dataset, which changes it (character set and
 * DS values were seen to change), so we write only the meta header ourselves and keep the sender's bytes.
 */
export function encodeFileMetaHeader(input: FileMetaInput): Buffer {
  // Every UID is validated first: these values come off the network.
  const sopClassUid = requireUid('MediaStorageSOPClassUID', input.sopClassUid);
  const sopInstanceUid = requireUid('MediaStorageSOPInstanceUID', input.sopInstanceUid);
  const transferSyntaxUid = requireUid('TransferSyntaxUID', input.transferSyntaxUid);
  const sourceAe = normaliseAeTitle(input.sourceAeTitle);

  const elements: Buffer[] = [
    element(0x0001, 'OB', Buffer.from([0x00, 0x01])),
    element(0x0002, 'UI', padded(sopClassUid, 0x00)),
    element(0x0003, 'UI', padded(sopInstanceUid, 0x00)),
    element(0x0010, 'UI', padded(transferSyntaxUid, 0x00)),
    element(0x0012, 'UI', padded(IMPLEMENTATION_CLASS_UID, 0x00)),
    element(0x0013, 'SH', padded(IMPLEMENTATION_VERSION_NAME, 0x20)),
  ];
  if (sourceAe !== undefined) elements.push(element(0x0016, 'AE', padded(sourceAe, 0x20)));

  const body = Buffer.concat(elements);
  const groupLengthValue = Buffer.alloc(4);
  groupLengthValue.writeUInt32LE(body.length, 0);
  return Buffer.concat([Buffer.alloc(PREAMBLE_LENGTH), MAGIC, element(0x0000, 'UL', groupLengthValue), body]);
}

function padded(value: string, pad: number): Buffer {
  const bytes = Buffer.from(value, 'ascii');
  return bytes.length % 2 === 0 ? bytes : Buffer.concat([bytes, Buffer.from([pad])]);
}

function element(elementNumber: number, vr: string, value: Buffer): Buffer {
  const long = LONG_VRS.has(vr);
  const head = Buffer.alloc(long ? 12 : 8);
  head.writeUInt16LE(0x0002, 0);
  head.writeUInt16LE(elementNumber, 2);
  head.write(vr, 4, 'ascii');
  if (long) head.writeUInt32LE(value.length, 8);
  else head.writeUInt16LE(value.length, 6);
  return Buffer.concat([head, value]);
}

/**
 * Offset of the first dataset byte in a Part-10 file (after the group 0002 elements), found by walking
 * the meta elements rather than trusting (0002,0000), which some writers omit or get wrong.
 */
export function part10DatasetOffset(buf: Buffer): number {
  if (buf.length < PREAMBLE_LENGTH + 4 || !buf.subarray(PREAMBLE_LENGTH, PREAMBLE_LENGTH + 4).equals(MAGIC)) {
    throw new Part10Error('not a DICOM Part-10 file (no DICM prefix)');
  }
  let offset = PREAMBLE_LENGTH + 4;
  while (offset + 8 <= buf.length && buf.readUInt16LE(offset) === 0x0002) {
    const vr = buf.toString('ascii', offset + 4, offset + 6);
    if (LONG_VRS.has(vr)) {
      if (offset + 12 > buf.length) break;
      offset += 12 + buf.readUInt32LE(offset + 8);
    } else {
      offset += 8 + buf.readUInt16LE(offset + 6);
    }
  }
  if (offset > buf.length) throw new Part10Error('file meta header runs past the end of the file');
  return offset;
}

export interface InstanceHeader {
  studyUid?: string;
  seriesUid?: string;
  sopInstanceUid?: string;
  sopClassUid?: string;
  transferSyntaxUid?: string;
  modality?: string;
  bodyPartExamined?: string;
  seriesDescription?: string;
  studyDescription?: string;
  /** Protocol Name (0018,1030). */
  protocolName?: string;
  /** First item of the Anatomic Region Sequence (0008,2218), or of the shared Frame Anatomy's. */
  anatomicRegion?: CodedEntry;
  instanceNumber?: number;
  rows?: number;
  columns?: number;
  numberOfFrames?: number;
  samplesPerPixel?: number;
  bitsAllocated?: number;
  /** Number of Series Related Instances (0020,1209): how many instances the series has (study completion). */
  seriesRelatedInstances?: number;
  /** Images in Acquisition (0020,1002): how many instances the acquisition has (study completion). */
  imagesInAcquisition?: number;
  /** Acquisition Number (0020,0012). */
  acquisitionNumber?: number;
  /**
   * Identifying data (PHI), for the console only: the study index keeps it on the study, never on the
   * instance record, and the API masks it for users without the PHI permission. Never log it.
   */
  identity?: InstanceIdentity;
}

/** Accession Number (0008,0050), Patient ID (0010,0020), Patient's Name (0010,0010) as received. */
export interface InstanceIdentity {
  accessionNumber?: string;
  patientId?: string;
  patientName?: string;
}

/** A Code Sequence Macro item (PS3.3 §8.8), each field cut to its VR's length. */
export interface CodedEntry {
  /** Code Value (SH), or Long Code Value (UC, cut to 64) when only that is present. */
  value?: string;
  /** Coding Scheme Designator (SH), e.g. SCT or SRT. */
  scheme?: string;
  /** Code Meaning (LO). */
  meaning?: string;
}

export interface ReadHeaderOptions {
  /** Give up when the attributes before Pixel Data need more than this many bytes (default 64 MiB). */
  maxHeaderBytes?: number;
  /**
   * Deflated Explicit VR Little Endian: the whole data set may inflate to at most this many bytes (default
   * MAX_INFLATED_BYTES), else InflatedTooLargeError. Inflation streams and stops at the limit.
   */
  maxInflatedBytes?: number;
  /**
   * The file's first bytes and its size, when the caller still has them (it just wrote the file): parsed
   * without opening the file; the file is read only when the header does not fit in them.
   */
  prefix?: { bytes: Buffer; fileSize: number };
}

/** Random access to an object's bytes without a file path (a staged write, an object in a store). */
export interface ByteSource {
  size: number;
  /** Bytes [offset, offset + length), fewer at the end. */
  read(offset: number, length: number): Promise<Buffer>;
}

// dcmjs warns (with a stack trace) on every prefix that ends mid-element, which we expect and handle;
// dcmjs-dimse sets the same level whenever it builds a Dataset.
dcmjs.log.setLevel('error');

const FIRST_READ_BYTES = 64 * 1024;
const DEFAULT_MAX_HEADER_BYTES = 64 * 1024 * 1024;
/**
 * Largest inflated Deflated Explicit VR Little Endian data set. A deflate bomb (0.5 MB inflating to 512 MiB)
 * is refused once this many bytes have come out, whatever it claims; real deflated objects (SR, small images)
 * stay far below it.
 */
export const MAX_INFLATED_BYTES = 256 * 1024 * 1024;

interface DcmjsElement {
  Value?: unknown[];
  /** The value as it was in the file, where dcmjs keeps it (string VRs). */
  _rawValue?: unknown;
}
type DcmjsDict = Record<string, DcmjsElement | undefined>;

/**
 * Reads the key attributes of a Part-10 file. Only a prefix of the file is read: the parse stops at
 * Pixel Data (7FE0,0010), and the prefix grows (×4) only while the attributes before it do not fit.
 * Deflated files are read whole (up to maxHeaderBytes) and inflated here, streaming, with a cap on the
 * inflated size (maxInflatedBytes): only a prefix of the inflated bytes is kept, and the nesting check and
 * the parse run on those inflated bytes, exactly as for an uncompressed data set.
 * Throws Part10Error for anything that is not a readable Part-10 file (InflatedTooLargeError for a bomb).
 */
export async function readInstanceHeader(
  path: string | ByteSource,
  opts: ReadHeaderOptions = {},
): Promise<InstanceHeader> {
  if (opts.prefix !== undefined) {
    const plain = instanceHeaderFromTopLevel(usablePrefix(opts.prefix, opts), opts.prefix.fileSize);
    if (plain !== undefined) return plain;
  }
  const { meta, dict: d } = await readHeaderDict(path, opts);
  return {
    studyUid: firstString(d['0020000D']),
    seriesUid: firstString(d['0020000E']),
    sopInstanceUid: firstString(d['00080018']),
    sopClassUid: firstString(d['00080016']),
    transferSyntaxUid: firstString(meta['00020010']),
    modality: firstString(d['00080060']),
    bodyPartExamined: firstString(d['00180015']),
    seriesDescription: firstString(d['0008103E']),
    studyDescription: firstString(d['00081030']),
    protocolName: firstString(d['00181030']),
    anatomicRegion: anatomicRegion(d),
    instanceNumber: firstNumber(d['00200013']),
    rows: firstNumber(d['00280010']),
    columns: firstNumber(d['00280011']),
    numberOfFrames: firstNumber(d['00280008']),
    samplesPerPixel: firstNumber(d['00280002']),
    bitsAllocated: firstNumber(d['00280100']),
    seriesRelatedInstances: count(firstNumber(d['00201209'])),
    imagesInAcquisition: count(firstNumber(d['00201002'])),
    acquisitionNumber: integer(firstNumber(d['00200012'])),
    identity: identityOf(d),
  };
}

function identityOf(d: DcmjsDict): InstanceIdentity | undefined {
  return identity(firstString(d['00080050']), firstString(d['00100020']), personName(d['00100010']));
}

/** The identifying attributes, each cut to its VR's length; undefined when the header has none. */
function identity(
  accessionNumber: string | undefined,
  patientId: string | undefined,
  patientName: string | undefined,
): InstanceIdentity | undefined {
  const id: InstanceIdentity = {
    accessionNumber: accessionNumber?.slice(0, 64),
    patientId: patientId?.slice(0, 64),
    patientName: patientName?.slice(0, 324),
  };
  return Object.values(id).some((v) => v !== undefined) ? id : undefined;
}

/** A PN value: dcmjs gives an object with its Alphabetic group (or a plain string in older versions). */
function personName(el: DcmjsElement | undefined): string | undefined {
  const v = el?.Value?.[0];
  if (typeof v === 'object' && v !== null && typeof (v as { Alphabetic?: unknown }).Alphabetic === 'string')
    return firstString({ Value: [(v as { Alphabetic: string }).Alphabetic] });
  return firstString(el);
}

/** The attributes readInstanceHeader reads, with their VR (PS3.6), by tag. */
const HEADER_VRS = new Map<number, string>([
  [0x0020000d, 'UI'],
  [0x0020000e, 'UI'],
  [0x00080018, 'UI'],
  [0x00080016, 'UI'],
  [0x00080060, 'CS'],
  [0x00180015, 'CS'],
  [0x0008103e, 'LO'],
  [0x00081030, 'LO'],
  [0x00181030, 'LO'],
  [0x00200013, 'IS'],
  [0x00280010, 'US'],
  [0x00280011, 'US'],
  [0x00280008, 'IS'],
  [0x00280002, 'US'],
  [0x00280100, 'US'],
  [0x00201209, 'IS'],
  [0x00201002, 'IS'],
  [0x00200012, 'IS'],
  [0x00080050, 'SH'],
  [0x00100020, 'LO'],
  [0x00100010, 'PN'],
]);

/** Where an anatomic region can be (sequences): a header with either is read through dcmjs. */
const ANATOMY_SEQUENCES = [0x00082218, 0x52009229];

/**
 * readInstanceHeader's result read straight from the top-level elements, without dcmjs: what every C-STORE
 * and STOW-RS part pays, where dcmjs parses and naturalizes every attribute of the header to keep 21 of them
 * (on the 2-core VM of docs/benchmarks.md, 0.5 ms of the event loop per instance while receiving). Only for
 * the plain case; undefined otherwise, and dcmjs reads it: a little-endian data set (not deflated) whose
 * walk reached Pixel Data or the end of a whole file, each attribute with the VR the standard gives it,
 * in plain ASCII (plain-values.ts), binary values of whole length, no anatomic-region sequence. The values
 * are exactly those of the dcmjs path (tests/unit/dicom/header-fast-path.test.ts compares the two on every
 * sample). Exported for those tests.
 */
export function instanceHeaderFromTopLevel(buf: Buffer, fileSize: number): InstanceHeader | undefined {
  if (buf.length < PREAMBLE_LENGTH + 4 || !buf.subarray(PREAMBLE_LENGTH, PREAMBLE_LENGTH + 4).equals(MAGIC))
    return undefined;
  const ts = metaElement(buf, 0x0010);
  if (ts === undefined || ts.end > buf.length || !isPlainAscii(buf, ts.start, ts.end)) return undefined;
  const transferSyntaxUid = firstUid(buf, ts.start, ts.end);
  if (
    transferSyntaxUid === undefined ||
    transferSyntaxUid === DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN ||
    transferSyntaxUid === EXPLICIT_VR_BIG_ENDIAN
  )
    return undefined;
  const elements = new Map<number, TopLevelElement>();
  let walk: DatasetWalk;
  try {
    walk = checkSequenceDepth(buf, MAX_SEQUENCE_DEPTH, (e) => {
      if (HEADER_VRS.has(e.tag) || ANATOMY_SEQUENCES.includes(e.tag)) elements.set(e.tag, e);
    });
  } catch {
    return undefined; // the dcmjs path refuses it with the same error
  }
  const whole = buf.length >= fileSize;
  if (!(walk.reachedPixelData === true || (whole && walk.reachedEnd === true))) return undefined;
  if (walk.pixelDataEnd !== undefined && walk.pixelDataEnd > fileSize) return undefined;
  if (ANATOMY_SEQUENCES.some((tag) => elements.has(tag))) return undefined;

  const values = new Map<number, string | number | undefined>();
  for (const [tag, e] of elements) {
    const vr = HEADER_VRS.get(tag)!;
    if ((e.vr !== undefined && e.vr !== vr) || e.length === undefined) return undefined;
    const start = e.valueStart;
    const end = start + e.length;
    if (end > buf.length) return undefined;
    if (vr === 'US') {
      // dcmjs gives an empty US its default value, and reads odd lengths its own way.
      if (e.length === 0 || e.length % 2 !== 0) return undefined;
      values.set(tag, firstUnsignedShort(buf, start, end));
      continue;
    }
    if (!isPlainAscii(buf, start, end)) return undefined;
    values.set(
      tag,
      vr === 'UI'
        ? firstUid(buf, start, end)
        : vr === 'IS'
          ? firstIntegerString(buf, start, end)
          : vr === 'PN'
            ? firstPersonName(buf, start, end)
            : firstText(buf, start, end),
    );
  }
  const text = (tag: number) => values.get(tag) as string | undefined;
  const num = (tag: number) => values.get(tag) as number | undefined;
  return {
    studyUid: text(0x0020000d),
    seriesUid: text(0x0020000e),
    sopInstanceUid: text(0x00080018),
    sopClassUid: text(0x00080016),
    transferSyntaxUid,
    modality: text(0x00080060),
    bodyPartExamined: text(0x00180015),
    seriesDescription: text(0x0008103e),
    studyDescription: text(0x00081030),
    protocolName: text(0x00181030),
    anatomicRegion: undefined,
    instanceNumber: num(0x00200013),
    rows: num(0x00280010),
    columns: num(0x00280011),
    numberOfFrames: num(0x00280008),
    samplesPerPixel: num(0x00280002),
    bitsAllocated: num(0x00280100),
    seriesRelatedInstances: count(num(0x00201209)),
    imagesInAcquisition: count(num(0x00201002)),
    acquisitionNumber: integer(num(0x00200012)),
    identity: identity(text(0x00080050), text(0x00100020), text(0x00100010)),
  };
}

/**
 * Every attribute before Pixel Data as a naturalized dcmjs dataset (keyword → value, strings decoded).
 * SpecificCharacterSet is the source's declared value (dcmjs would say 'ISO_IR 192' once it has decoded
 * the strings), so that an object derived from the source can declare the same character set. Same
 * bounded reading as readInstanceHeader.
 */
export async function readNaturalizedHeader(
  path: string | ByteSource,
  opts: ReadHeaderOptions = {},
): Promise<Record<string, unknown>> {
  const { dict, rawText } = await readHeaderDict(path, opts);
  const withoutPixelPlaceholder = { ...dict };
  delete withoutPixelPlaceholder['7FE00010'];
  const header = dcmjs.data.DicomMetaDictionary.naturalizeDataset(withoutPixelPlaceholder) as Record<
    string,
    unknown
  >;
  const declared = dict['00080005']?._rawValue;
  if (Array.isArray(declared) && declared.every((v) => typeof v === 'string') && declared.length > 0) {
    const values = declared.map((v: string) => v.trim());
    header.SpecificCharacterSet = values.length === 1 ? values[0] : values;
  }
  if (rawText !== undefined && rawText.size > 0) SOURCE_TEXT_BYTES.set(header, rawText);
  return header;
}

const SOURCE_TEXT_BYTES = new WeakMap<object, ReadonlyMap<string, Buffer>>();

/**
 * The bytes a header from readNaturalizedHeader had in its file for each top-level text value (PN, LO,
 * SH, ST, LT, UC, UT; in Implicit VR any value) that is not plain 7-bit ASCII, by tag ('00100010'), value
 * padding included. dcmjs decodes text into Unicode and writes UTF-8; these let an object derived from
 * the source carry the text in the source's character set, byte for byte. Undefined for other objects.
 */
export function sourceTextBytes(header: object): ReadonlyMap<string, Buffer> | undefined {
  return SOURCE_TEXT_BYTES.get(header);
}

interface HeaderDict {
  meta: DcmjsDict;
  dict: DcmjsDict;
  /** Top-level text values with bytes beyond 7-bit ASCII, as the file has them, by tag (ggggeeee). */
  rawText?: Map<string, Buffer>;
}

async function readHeaderDict(path: string | ByteSource, opts: ReadHeaderOptions): Promise<HeaderDict> {
  const maxBytes = opts.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
  // What the file read starts with: a prefix already in memory that did not hold the header is not
  // read and parsed again, the read starts where growing it would have gone.
  let next = (size: number) => Math.min(size, FIRST_READ_BYTES, maxBytes);
  if (opts.prefix !== undefined) {
    const { fileSize } = opts.prefix;
    const usable = usablePrefix(opts.prefix, opts);
    const parsed = parsePrefix(usable, usable.length >= fileSize, fileSize);
    if (parsed.kind === 'done') return parsed.message;
    if (parsed.kind === 'deflated') return readDeflated(usable, maxBytes, opts.maxInflatedBytes);
    const kind = parsed.kind;
    next = (size) => grow(kind, Math.max(usable.length, 1), size, maxBytes);
  }
  const { source, done } = await openSource(path);
  try {
    const { size } = source;
    let want = next(size);
    for (;;) {
      const got = await source.read(0, want);
      const bytesRead = got.length;
      const complete = bytesRead >= size;
      const parsed = parsePrefix(got, complete, size);
      if (parsed.kind === 'done') return parsed.message;
      if (parsed.kind === 'deflated') {
        return await readDeflated(got, maxBytes, opts.maxInflatedBytes);
      }
      if (want >= size) throw new Part10Error(`unparseable DICOM header: ${parsed.reason}`);
      if (want >= maxBytes) {
        throw new Part10Error(`DICOM header does not fit in ${maxBytes} bytes (${parsed.reason})`);
      }
      want = grow(parsed.kind, want, size, maxBytes);
    }
  } finally {
    await done();
  }
}

/** The part of a caller's prefix that is the file's and within the header limit. */
function usablePrefix(prefix: { bytes: Buffer; fileSize: number }, opts: ReadHeaderOptions): Buffer {
  const maxBytes = opts.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
  return prefix.bytes.subarray(0, Math.min(prefix.bytes.length, prefix.fileSize, maxBytes));
}

/** A file path opened as a ByteSource (closed by done()), or the caller's ByteSource as it is. */
async function openSource(from: string | ByteSource): Promise<{ source: ByteSource; done(): Promise<void> }> {
  if (typeof from !== 'string') return { source: from, done: async () => undefined };
  const handle = await open(from, 'r');
  try {
    const { size } = await handle.stat();
    const read = async (offset: number, length: number) => {
      const buf = Buffer.alloc(length);
      const { bytesRead } = await handle.read(buf, 0, length, offset);
      return buf.subarray(0, bytesRead);
    };
    return { source: { size, read }, done: () => handle.close() };
  } catch (err) {
    await handle.close();
    throw err;
  }
}

/** The next read size after `read` bytes did not hold the header. */
function grow(kind: 'need-more' | 'need-whole-file', read: number, size: number, maxBytes: number): number {
  return kind === 'need-whole-file' ? Math.min(size, maxBytes) : Math.min(size, read * 4, maxBytes);
}

type ParseResult =
  | { kind: 'done'; message: HeaderDict }
  | { kind: 'need-more' | 'need-whole-file'; reason: string }
  /** The whole file is here and its data set is deflated: inflate it (readDeflated) and parse that. */
  | { kind: 'deflated' };

function parsePrefix(buf: Buffer, complete: boolean, fileSize: number): ParseResult {
  if (buf.length < PREAMBLE_LENGTH + 4 || !buf.subarray(PREAMBLE_LENGTH, PREAMBLE_LENGTH + 4).equals(MAGIC)) {
    // Not something more bytes can fix.
    throw new Part10Error('not a DICOM Part-10 file (no DICM prefix)');
  }
  // Never handed to dcmjs, which would inflate the whole data set in memory with no limit.
  if (metaTransferSyntax(buf) === DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN) {
    return complete ? { kind: 'deflated' } : { kind: 'need-whole-file', reason: 'deflated transfer syntax' };
  }
  // dcmjs parses sequences recursively: measure the nesting first, iteratively, and refuse a hostile one.
  const rawText = new Map<string, Buffer>();
  const { pixelDataEnd, endsInside } = checkSequenceDepth(buf, MAX_SEQUENCE_DEPTH, (e) =>
    keepRawText(buf, e, rawText),
  );
  if (complete && endsInside !== undefined) throw new Part10Error(`data set is truncated: ${endsInside}`);
  if (pixelDataEnd !== undefined && pixelDataEnd > fileSize) {
    throw new Part10Error(`Pixel Data runs ${pixelDataEnd - fileSize} bytes past the end of the file`);
  }
  const arrayBuffer = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length);
  let message: HeaderDict;
  try {
    // ignoreErrors: real data carries character sets dcmjs refuses (e.g. multi-valued ISO 2022), which must
    // not make an instance unreadable; a dataset cut short is detected below by the missing Pixel Data tag.
    message = dcmjs.data.DicomMessage.readFile(arrayBuffer, {
      untilTag: '7FE00010',
      includeUntilTagValue: false,
      ignoreErrors: true,
    });
  } catch (err) {
    const reason = errorMessage(err);
    if (complete) throw new Part10Error(`unparseable DICOM header: ${reason}`);
    return { kind: 'need-more', reason };
  }
  if (!complete) {
    // dcmjs stops quietly at the end of a short buffer; only reaching Pixel Data proves we saw everything.
    if (!('7FE00010' in message.dict))
      return { kind: 'need-more', reason: 'no Pixel Data within the prefix' };
  }
  return { kind: 'done', message: { meta: message.meta, dict: message.dict, rawText } };
}

/** Text VRs whose bytes are kept as the file has them (see sourceTextBytes). */
const RAW_TEXT_VRS = new Set(['PN', 'LO', 'SH', 'ST', 'LT', 'UC', 'UT']);
const MAX_RAW_TEXT_BYTES = 4096;

/** Keeps a copy of a top-level text value whose bytes are not all 7-bit ASCII without ESC. */
function keepRawText(buf: Buffer, e: TopLevelElement, into: Map<string, Buffer>): void {
  if (e.vr !== undefined && !RAW_TEXT_VRS.has(e.vr)) return;
  if (e.length === undefined || e.length > MAX_RAW_TEXT_BYTES || e.valueStart + e.length > buf.length) return;
  const value = buf.subarray(e.valueStart, e.valueStart + e.length);
  if (!value.some((b) => b > 0x7f || b === 0x1b)) return;
  into.set(e.tag.toString(16).toUpperCase().padStart(8, '0'), Buffer.from(value));
}

/**
 * Header of a whole deflated Part-10 file: the data set is inflated (streaming, off the main thread) into a
 * kept prefix that grows ×4 while the attributes before Pixel Data do not fit (up to maxHeaderBytes), and
 * every pass counts the whole inflated size against maxInflatedBytes. The kept bytes are parsed as Explicit
 * VR Little Endian behind a rewritten meta group, so the nesting check sees the inflated data set.
 */
async function readDeflated(
  file: Buffer,
  maxHeaderBytes: number,
  maxInflatedBytes = MAX_INFLATED_BYTES,
): Promise<HeaderDict> {
  const offset = part10DatasetOffset(file);
  const meta = metaWithTransferSyntax(file, offset, EXPLICIT_VR_LITTLE_ENDIAN);
  const body = file.subarray(offset);
  for (let keep = FIRST_READ_BYTES; ; keep = Math.min(keep * 4, maxHeaderBytes)) {
    const inflated = await inflateCapped(body, keep, maxInflatedBytes);
    const complete = inflated.head.length >= inflated.total;
    const parsed = parsePrefix(Buffer.concat([meta, inflated.head]), complete, meta.length + inflated.total);
    if (parsed.kind === 'done') {
      parsed.message.meta['00020010'] = { Value: [DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN] };
      return parsed.message;
    }
    const reason = parsed.kind === 'deflated' ? 'deflated twice' : parsed.reason;
    if (complete) throw new Part10Error(`unparseable DICOM header: ${reason}`);
    if (keep >= maxHeaderBytes) {
      throw new Part10Error(`DICOM header does not fit in ${maxHeaderBytes} bytes (${reason})`);
    }
  }
}

/** Raw-inflates `body`, keeping its first `keep` bytes and counting the rest; stops past `limit` bytes. */
function inflateCapped(body: Buffer, keep: number, limit: number): Promise<{ head: Buffer; total: number }> {
  return new Promise((resolve, reject) => {
    const inflate = createInflateRaw({ chunkSize: 64 * 1024 });
    const kept: Buffer[] = [];
    let keptBytes = 0;
    let total = 0;
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      inflate.removeAllListeners('data');
      inflate.destroy();
      fn();
    };
    inflate.on('data', (chunk: Buffer) => {
      total += chunk.length;
      if (total > limit) return settle(() => reject(new InflatedTooLargeError(limit)));
      if (keptBytes < keep) {
        const part = chunk.subarray(0, keep - keptBytes);
        kept.push(Buffer.from(part));
        keptBytes += part.length;
      }
    });
    inflate.on('error', (err: Error) =>
      settle(() => reject(new Part10Error(`deflated data set is corrupt: ${err.message}`))),
    );
    inflate.on('end', () => settle(() => resolve({ head: Buffer.concat(kept), total })));
    inflate.end(body);
  });
}

/** Preamble, 'DICM' and the file's meta group with its Transfer Syntax UID replaced (group length fixed). */
function metaWithTransferSyntax(file: Buffer, datasetOffset: number, transferSyntaxUid: string): Buffer {
  const kept: { elementNumber: number; bytes: Buffer }[] = [];
  let pos = PREAMBLE_LENGTH + 4;
  while (pos < datasetOffset) {
    const elementNumber = file.readUInt16LE(pos + 2);
    const vr = file.toString('ascii', pos + 4, pos + 6);
    const long = LONG_VRS.has(vr);
    const end = pos + (long ? 12 + file.readUInt32LE(pos + 8) : 8 + file.readUInt16LE(pos + 6));
    if (elementNumber !== 0x0000 && elementNumber !== 0x0010) {
      kept.push({ elementNumber, bytes: file.subarray(pos, end) });
    }
    pos = end;
  }
  kept.push({ elementNumber: 0x0010, bytes: element(0x0010, 'UI', padded(transferSyntaxUid, 0x00)) });
  kept.sort((a, b) => a.elementNumber - b.elementNumber);
  const body = Buffer.concat(kept.map((e) => e.bytes));
  const groupLength = Buffer.alloc(4);
  groupLength.writeUInt32LE(body.length, 0);
  return Buffer.concat([file.subarray(0, PREAMBLE_LENGTH), MAGIC, element(0x0000, 'UL', groupLength), body]);
}

function firstString(el: DcmjsElement | undefined): string | undefined {
  const v = el?.Value?.[0];
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  return typeof v === 'string' ? cleanText(v) : undefined;
}

/** The first item of a sequence, when it is one (anything else a hostile file may put there is ignored). */
function firstItem(el: DcmjsElement | undefined): DcmjsDict | undefined {
  const item = Array.isArray(el?.Value) ? el.Value[0] : undefined;
  return typeof item === 'object' && item !== null && !Array.isArray(item) ? (item as DcmjsDict) : undefined;
}

function codedEntry(item: DcmjsDict | undefined): CodedEntry | undefined {
  if (item === undefined) return undefined;
  const value = firstString(item['00080100'])?.slice(0, 16) ?? firstString(item['00080119'])?.slice(0, 64);
  const scheme = firstString(item['00080102'])?.slice(0, 16);
  const meaning = firstString(item['00080104'])?.slice(0, 64);
  if (value === undefined && meaning === undefined) return undefined;
  return { value, scheme, meaning };
}

/**
 * Anatomic Region Sequence (0008,2218) at the top level, or else in the Shared Functional Groups' Frame
 * Anatomy (5200,9229 › 0020,9071), where enhanced multi-frame objects keep it. First items only.
 */
function anatomicRegion(d: DcmjsDict): CodedEntry | undefined {
  const top = codedEntry(firstItem(d['00082218']));
  if (top !== undefined) return top;
  const frameAnatomy = firstItem(firstItem(d['52009229'])?.['00209071']);
  return codedEntry(firstItem(frameAnatomy?.['00082218']));
}

function firstNumber(el: DcmjsElement | undefined): number | undefined {
  const v = el?.Value?.[0];
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v.trim()) : NaN;
  return Number.isFinite(n) ? n : undefined;
}

/** Largest count taken from a header (a series or an acquisition of more instances is not believed). */
export const MAX_HEADER_COUNT = 1_000_000;

/** A whole number (IS) within ±MAX_HEADER_COUNT, else undefined. */
function integer(n: number | undefined): number | undefined {
  return n !== undefined && Number.isInteger(n) && Math.abs(n) <= MAX_HEADER_COUNT ? n : undefined;
}

/** A count: a whole number from 1 to MAX_HEADER_COUNT, else undefined (0 or garbage says nothing). */
function count(n: number | undefined): number | undefined {
  const i = integer(n);
  return i !== undefined && i >= 1 ? i : undefined;
}

/** Deeper than this is not a real data set (real SR trees stay well below 20 levels). */
export const MAX_SEQUENCE_DEPTH = 64;

const UNDEFINED_LENGTH = 0xffffffff;

export interface DatasetWalk {
  /** File offset just past a defined-length top-level Pixel Data value, when the walk reached one. */
  pixelDataEnd?: number;
  /** The walk reached the top-level Pixel Data element (of either length): every attribute before it was seen. */
  reachedPixelData?: boolean;
  /** The walk read every byte of the buffer, ending between top-level elements (no Pixel Data in it). */
  reachedEnd?: boolean;
  /** Set when the bytes end inside an element or an open sequence (meaningful for a whole file only). */
  endsInside?: string;
}

/** An element of the top-level data set, as checkSequenceDepth meets it. */
export interface TopLevelElement {
  /** (gggg,eeee) as one number, group in the high 16 bits. */
  tag: number;
  /** Explicit VR transfer syntaxes only. */
  vr: string | undefined;
  /** File offset of the element's tag. */
  headerStart: number;
  valueStart: number;
  /**
   * The value length as the file declares it (the value may run past a prefix's end); undefined for an
   * undefined-length value (a sequence), whose end only its delimiter tells.
   */
  length: number | undefined;
}

/**
 * Walks the data set of a Part-10 prefix without recursion and throws Part10Error when sequences nest deeper
 * than MAX_SEQUENCE_DEPTH. Stops quietly at Pixel Data, at the end of the buffer, or at anything it cannot
 * follow (the real parser judges those). A deflated data set is not walked here: readInstanceHeader inflates
 * it and walks the inflated bytes. `onTopLevel` is told of every element of the top-level data set before
 * Pixel Data (not of the elements inside sequences).
 */
export function checkSequenceDepth(
  buf: Buffer,
  maxDepth = MAX_SEQUENCE_DEPTH,
  onTopLevel?: (element: TopLevelElement) => void,
): DatasetWalk {
  let pos: number;
  try {
    pos = part10DatasetOffset(buf);
  } catch {
    return {};
  }
  const ts = metaTransferSyntax(buf);
  if (ts === DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN) return {};
  const explicit = ts !== IMPLICIT_VR_LITTLE_ENDIAN;
  const bigEndian = ts === EXPLICIT_VR_BIG_ENDIAN;
  const u16 = (at: number) => (bigEndian ? buf.readUInt16BE(at) : buf.readUInt16LE(at));
  const u32 = (at: number) => (bigEndian ? buf.readUInt32BE(at) : buf.readUInt32LE(at));
  // Open sequences and items: the offset where each ends, or undefined until its delimiter.
  const open: { end: number | undefined; sequence: boolean }[] = [];
  let depth = 0;
  const close = () => {
    if (open.pop()?.sequence) depth--;
  };
  while (pos + 8 <= buf.length) {
    for (let top = open.at(-1); top?.end !== undefined && pos >= top.end; top = open.at(-1)) close();
    const group = u16(pos);
    const elementNumber = u16(pos + 2);
    if (group === 0xfffe) {
      const length = u32(pos + 4);
      pos += 8;
      if (elementNumber === 0xe000) {
        open.push({ end: length === UNDEFINED_LENGTH ? undefined : pos + length, sequence: false });
      } else if (elementNumber === 0xe00d || elementNumber === 0xe0dd) {
        close();
      } else {
        return {};
      }
      continue;
    }
    const pixelData = group === 0x7fe0 && elementNumber === 0x0010 && depth === 0;
    let vr: string | undefined;
    let length: number;
    let headerLength: number;
    if (explicit) {
      vr = buf.toString('ascii', pos + 4, pos + 6);
      if (!/^[A-Z]{2}$/.test(vr)) return {};
      if (LONG_VRS.has(vr)) {
        if (pos + 12 > buf.length) return {};
        length = u32(pos + 8);
        headerLength = 12;
      } else {
        length = u16(pos + 6);
        headerLength = 8;
      }
    } else {
      length = u32(pos + 4);
      headerLength = 8;
    }
    if (onTopLevel !== undefined && open.length === 0 && !pixelData) {
      onTopLevel({
        tag: group * 0x10000 + elementNumber,
        vr,
        headerStart: pos,
        valueStart: pos + headerLength,
        length: length === UNDEFINED_LENGTH ? undefined : length,
      });
    }
    pos += headerLength;
    if (pixelData) {
      return length === UNDEFINED_LENGTH
        ? { reachedPixelData: true }
        : { reachedPixelData: true, pixelDataEnd: pos + length };
    }
    // Implicit VR: only undefined-length sequences are recognisable without a dictionary; that is enough,
    // since a defined-length sequence cannot be deeper than the bytes that hold it.
    if (vr === 'SQ' || length === UNDEFINED_LENGTH) {
      depth++;
      if (depth > maxDepth) throw new Part10Error(`sequences nested deeper than ${maxDepth} levels`);
      open.push({ end: length === UNDEFINED_LENGTH ? undefined : pos + length, sequence: true });
      continue;
    }
    pos += length;
  }
  if (pos > buf.length) return { endsInside: 'an element value runs past the end' };
  if (pos < buf.length) return { endsInside: 'the last element header is cut short' };
  if (open.some((o) => o.end === undefined)) return { endsInside: 'a sequence is never closed' };
  return open.length === 0 ? { reachedEnd: true } : {};
}

/** Transfer Syntax UID (0002,0010) from the file meta group, or undefined. */
function metaTransferSyntax(buf: Buffer): string | undefined {
  const e = metaElement(buf, 0x0010);
  return e === undefined ? undefined : buf.toString('ascii', e.start, e.end).replace(/[\0 ]+$/, '');
}

/** Where the value of element (0002,eeee) of the file meta group lies (it may run past buf's end), or undefined. */
function metaElement(buf: Buffer, elementNumber: number): { start: number; end: number } | undefined {
  let offset = PREAMBLE_LENGTH + 4;
  while (offset + 8 <= buf.length && buf.readUInt16LE(offset) === 0x0002) {
    const vr = buf.toString('ascii', offset + 4, offset + 6);
    const long = LONG_VRS.has(vr);
    if (long && offset + 12 > buf.length) return undefined;
    const length = long ? buf.readUInt32LE(offset + 8) : buf.readUInt16LE(offset + 6);
    const start = offset + (long ? 12 : 8);
    if (buf.readUInt16LE(offset + 2) === elementNumber) return { start, end: start + length };
    offset = start + length;
  }
  return undefined;
}
