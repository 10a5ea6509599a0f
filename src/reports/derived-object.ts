// What every object we derive from a source image (SR, SEG) shares: the SOP Common, Patient, General
// Study and General Series attributes, each copied value made valid for its VR (a legacy value never makes
// the object unwritable), the source's character set and text bytes kept where they mean the same, the
// referenced-series grouping, and writing the Part-10 file. The SR (sr/tid1500.ts) and the SEG
// (seg/segmentation.ts) are built over this one module.
import dcmjs from 'dcmjs';
import {
  checkSequenceDepth,
  IMPLEMENTATION_CLASS_UID,
  IMPLEMENTATION_VERSION_NAME,
  MAX_SEQUENCE_DEPTH,
  sourceTextBytes,
} from '../dicom/part10.ts';
import { EXPLICIT_VR_LITTLE_ENDIAN } from '../dicom/transfer-syntax.ts';
import { normaliseValue, VR_MAX_CHARS, type NormaliseResult } from '../dicom/value-normalise.ts';
import { reportsEvents } from './events.ts';
import type { Dataset } from './sr/content.ts';

/** Manufacturer of every derived object (General Equipment). */
export const SR_MANUFACTURER = 'dicom-ai-gateway';

/**
 * Patient and General Study attributes copied from the source into every derived object (SR, SEG), with
 * their tag, VR and type: Type 2 ones are always written (empty when the source has no valid value),
 * Type 3 ones only with a value.
 */
const COPIED: readonly {
  keyword: string;
  tag: string;
  vr: string;
  type: 2 | 3;
  enumerated?: readonly string[];
}[] = [
  { keyword: 'PatientName', tag: '(0010,0010)', vr: 'PN', type: 2 },
  { keyword: 'PatientID', tag: '(0010,0020)', vr: 'LO', type: 2 },
  { keyword: 'PatientBirthDate', tag: '(0010,0030)', vr: 'DA', type: 2 },
  { keyword: 'PatientSex', tag: '(0010,0040)', vr: 'CS', type: 2, enumerated: ['M', 'F', 'O'] },
  { keyword: 'StudyDate', tag: '(0008,0020)', vr: 'DA', type: 2 },
  { keyword: 'StudyTime', tag: '(0008,0030)', vr: 'TM', type: 2 },
  { keyword: 'ReferringPhysicianName', tag: '(0008,0090)', vr: 'PN', type: 2 },
  { keyword: 'StudyID', tag: '(0020,0010)', vr: 'SH', type: 2 },
  { keyword: 'AccessionNumber', tag: '(0008,0050)', vr: 'SH', type: 2 },
  // Copied when present so the SR files under the same study description in the PACS.
  { keyword: 'StudyDescription', tag: '(0008,1030)', vr: 'LO', type: 3 },
];

export class ReportInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReportInputError';
  }
}

/** Each instance once, in first-seen order (a volume lists every frame of a multi-frame image). */
export function distinctInstances<T extends { sopInstanceUid: string }>(refs: readonly T[]): T[] {
  const seen = new Set<string>();
  return refs.filter((r) => !seen.has(r.sopInstanceUid) && seen.add(r.sopInstanceUid));
}

export type InstanceRef = { seriesUid: string; sopInstanceUid: string; sopClassUid: string };

/**
 * Each referenced instance once, grouped by series in first-seen order, as the items of a Referenced
 * Series Sequence with the instance list under `instancesKey` (the SR's evidence and the SEG's common
 * instance reference name it differently).
 */
export function referencedSeries(
  refs: readonly InstanceRef[],
  instancesKey: 'ReferencedSOPSequence' | 'ReferencedInstanceSequence',
): Dataset[] {
  const bySeries = new Map<string, Dataset[]>();
  for (const r of distinctInstances(refs)) {
    const list = bySeries.get(r.seriesUid) ?? [];
    list.push({ ReferencedSOPClassUID: r.sopClassUid, ReferencedSOPInstanceUID: r.sopInstanceUid });
    bySeries.set(r.seriesUid, list);
  }
  return [...bySeries].map(([seriesUid, sops]) => ({ SeriesInstanceUID: seriesUid, [instancesKey]: sops }));
}

/** A naturalized dataset as a Part-10 file in Explicit VR Little Endian. */
export function writePart10(ds: Dataset): Buffer {
  const { DicomDict, DicomMetaDictionary } = dcmjs.data;
  const meta = {
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: ds.SOPClassUID,
    MediaStorageSOPInstanceUID: ds.SOPInstanceUID,
    TransferSyntaxUID: EXPLICIT_VR_LITTLE_ENDIAN,
    ImplementationClassUID: IMPLEMENTATION_CLASS_UID,
    ImplementationVersionName: IMPLEMENTATION_VERSION_NAME,
  };
  const dict = new DicomDict(DicomMetaDictionary.denaturalizeDataset(meta));
  const sourceBytes = SOURCE_BYTES.get(ds);
  const characterSet = writtenCharacterSet(ds, sourceBytes);
  // Text kept in the source's bytes is written as a placeholder by dcmjs (which writes UTF-8 only) and
  // then replaced by those bytes; only while the source's character set is the one declared.
  const splice =
    sourceBytes !== undefined && characterSet === ds.SpecificCharacterSet ? sourceBytes : undefined;
  let written: Dataset = ds;
  if (splice !== undefined) {
    written = { ...ds };
    for (const keyword of splice.keys()) written[keyword] = 'X';
  }
  dict.dict = DicomMetaDictionary.denaturalizeDataset(
    characterSet === undefined
      ? withoutKey(written, 'SpecificCharacterSet')
      : { ...written, SpecificCharacterSet: characterSet },
  );
  const out = Buffer.from(dict.write() as ArrayBuffer);
  return splice === undefined ? out : spliceTopLevelValues(out, splice);
}

/** Text values of a derived object to be written as these bytes (in its declared character set). */
interface SourceText {
  tag: number;
  bytes: Buffer;
}
const SOURCE_BYTES = new WeakMap<object, Map<string, SourceText>>();

/**
 * Replaces the values of top-level elements of an Explicit VR Little Endian Part-10 file (each padded
 * to even length with a space, its length field rewritten). Top-level elements sit in no defined-length
 * container, so nothing else in the file changes.
 */
function spliceTopLevelValues(file: Buffer, values: ReadonlyMap<string, SourceText>): Buffer {
  const byTag = new Map([...values.values()].map((v) => [v.tag, v.bytes]));
  const parts: Buffer[] = [];
  const done = new Set<number>();
  let copied = 0;
  checkSequenceDepth(file, MAX_SEQUENCE_DEPTH, (e) => {
    const bytes = byTag.get(e.tag);
    if (bytes === undefined || e.vr === undefined || e.length === undefined) return;
    const value = bytes.length % 2 === 0 ? bytes : Buffer.concat([bytes, Buffer.from(' ')]);
    const long = e.valueStart - e.headerStart === 12;
    if (!long && value.length > 0xffff) throw new ReportInputError(`a ${e.vr} value too long to write`);
    const header = Buffer.from(file.subarray(e.headerStart, e.valueStart));
    if (long) header.writeUInt32LE(value.length, 8);
    else header.writeUInt16LE(value.length, 6);
    parts.push(file.subarray(copied, e.headerStart), header, value);
    copied = e.valueStart + e.length;
    done.add(e.tag);
  });
  if (done.size !== byTag.size) throw new ReportInputError('a copied text attribute was not written');
  parts.push(file.subarray(copied));
  return Buffer.concat(parts);
}

/**
 * SOP Common, Patient, General Study and General Series attributes of an object we derive from a
 * source image (SR, SEG): in the source's study, in a series of its own, created `when`.
 */
export function derivedObjectHeader(o: {
  sopClassUid: string;
  sopInstanceUid: string;
  source: Record<string, unknown>;
  studyUid: string;
  modality: string;
  seriesInstanceUid: string;
  seriesNumber: number;
  when: { date: string; time: string; offset: string };
}): Record<string, unknown> {
  const ds: Record<string, unknown> = {
    SOPClassUID: o.sopClassUid,
    SOPInstanceUID: o.sopInstanceUid,
    InstanceCreationDate: o.when.date,
    InstanceCreationTime: o.when.time,
    TimezoneOffsetFromUTC: o.when.offset,
  };
  // The source's character set; writePart10 keeps it where the text written means the same in it.
  if (o.source.SpecificCharacterSet !== undefined) ds.SpecificCharacterSet = o.source.SpecificCharacterSet;
  const inSourceBytes = copyPatientAndStudy(o.source, ds, { object: o.modality, studyUid: o.studyUid });
  if (inSourceBytes.size > 0) SOURCE_BYTES.set(ds, inSourceBytes);
  ds.StudyInstanceUID = o.studyUid;
  ds.Modality = o.modality;
  ds.SeriesInstanceUID = o.seriesInstanceUid;
  ds.SeriesNumber = o.seriesNumber;
  ds.SeriesDate = o.when.date;
  ds.SeriesTime = o.when.time;
  return ds;
}

/**
 * Copies the Patient and General Study attributes a derived object (SR, SEG) shares with its source,
 * each made valid for its VR: a legacy value (a dotted date, a description longer than LO allows) is
 * normalised, one with no valid form is left out (Type 2: written empty) and named in the log, never
 * quoted. A source value can thus never make the object unwritable.
 */
function copyPatientAndStudy(
  source: Record<string, unknown>,
  ds: Record<string, unknown>,
  context: { object: string; studyUid: string },
): Map<string, SourceText> {
  const codeExtensions = usesCodeExtensions(source.SpecificCharacterSet);
  const inSourceBytes = new Map<string, SourceText>();
  const textBytes = sourceTextBytes(source);
  const decoder = textDecoderFor(source.SpecificCharacterSet);
  for (const attr of COPIED) {
    const raw = source[attr.keyword];
    let r = normaliseValue(attr.vr, raw, { codeExtensions });
    if (r.kind !== 'omitted' && attr.enumerated) r = enumerated(r.value, attr.enumerated);
    if (r.kind === 'omitted') {
      reportsEvents.attributeOmitted({
        ...context,
        keyword: attr.keyword,
        tag: attr.tag,
        vr: attr.vr,
        reason: r.reason,
      });
    }
    const value = r.kind === 'omitted' || r.value === undefined || r.value === null ? '' : r.value;
    if (attr.type === 2) ds[attr.keyword] = value;
    else if (!isEmpty(value)) ds[attr.keyword] = value;
    const tag = Number.parseInt(attr.tag.replace(/[(),]/g, ''), 16);
    const bytes = textInSourceCharset(attr.vr, value, {
      raw: textBytes?.get(tag.toString(16).toUpperCase().padStart(8, '0')),
      decoder,
      charset: source.SpecificCharacterSet,
    });
    if (bytes !== undefined) inSourceBytes.set(attr.keyword, { tag, bytes });
  }
  return inSourceBytes;
}

const PN_GROUPS = ['Alphabetic', 'Ideographic', 'Phonetic'] as const;

/** A PN, LO or SH value as one string ('=' between PN component groups), or undefined. */
function textOf(vr: string, value: unknown): string | undefined {
  const item = Array.isArray(value) ? (value.length === 1 ? value[0] : undefined) : value;
  if (typeof item === 'string') return item;
  if (vr !== 'PN' || !item || typeof item !== 'object') return undefined;
  const groups = PN_GROUPS.map((k) => (item as Record<string, unknown>)[k] ?? '');
  if (!groups.every((g) => typeof g === 'string')) return undefined;
  return groups.join('=').replace(/=+$/, '');
}

/**
 * The bytes of a copied text value (PN, LO, SH) in the source's character set, when it is not 7-bit
 * text (which is the same bytes in every character set and written so by dcmjs): the source's own bytes
 * where they decode to the value (the value kept, or cut to its VR's length: a prefix of them), else the
 * value encoded where we can (ISO_IR 192, ISO_IR 100). Undefined when there is no such form; the object
 * is then written in UTF-8 (writtenCharacterSet).
 */
function textInSourceCharset(
  vr: string,
  value: unknown,
  source: { raw: Buffer | undefined; decoder: TextDecoder | undefined; charset: unknown },
): Buffer | undefined {
  if (vr !== 'PN' && vr !== 'LO' && vr !== 'SH') return undefined;
  const text = textOf(vr, value);
  if (text === undefined || isSevenBit(text)) return undefined;
  const values = Array.isArray(source.charset) ? source.charset : [source.charset];
  if (!values.some((v) => typeof v === 'string' && v.trim() !== '')) return undefined;
  const raw = source.raw;
  let decoder = source.decoder;
  let bytes: Buffer | undefined;
  if (raw !== undefined && decoder !== undefined) {
    let end = raw.length;
    while (end > 0 && (raw[end - 1] === 0x20 || raw[end - 1] === 0x00)) end--;
    for (let n = end; n > 0 && bytes === undefined; n--) {
      const decoded = decodeOrUndefined(decoder, raw.subarray(0, n));
      if (decoded !== undefined && (vr === 'PN' ? decoded.replace(/=+$/, '') : decoded) === text)
        bytes = raw.subarray(0, n);
    }
  }
  if (bytes === undefined && values.length === 1) {
    if (values[0] === 'ISO_IR 192') {
      bytes = Buffer.from(text, 'utf8');
      decoder = new TextDecoder('utf-8', { fatal: true });
    } else if (values[0] === 'ISO_IR 100' && /^[\x20-\x7e\xa0-\xff]*$/.test(text)) {
      bytes = Buffer.from(text, 'latin1');
      decoder = new TextDecoder('latin1', { fatal: true });
    }
  }
  if (bytes === undefined || decoder === undefined) return undefined;
  return vr === 'PN' ? bytes : withinByteLimit(bytes, VR_MAX_CHARS[vr]!, text, decoder);
}

/**
 * LO and SH limits count characters, but validators (dciodvfy) and many archives count bytes: text of
 * several bytes per character is cut further, at a character boundary, to the limit in bytes.
 */
function withinByteLimit(bytes: Buffer, max: number, text: string, decoder: TextDecoder): Buffer | undefined {
  if (bytes.length <= max) return bytes;
  for (let n = max; n > 0; n--) {
    const decoded = decodeOrUndefined(decoder, bytes.subarray(0, n));
    if (decoded !== undefined && text.startsWith(decoded)) {
      let end = n;
      while (end > 0 && bytes[end - 1] === 0x20) end--;
      return end > 0 ? bytes.subarray(0, end) : undefined;
    }
  }
  return undefined;
}

function decodeOrUndefined(decoder: TextDecoder, bytes: Buffer): string | undefined {
  try {
    return decoder.decode(bytes);
  } catch {
    return undefined;
  }
}

/** The decoder dcmjs reads text of this Specific Character Set with (its first value decides). */
function textDecoderFor(charset: unknown): TextDecoder | undefined {
  const first = Array.isArray(charset) ? charset[0] : charset;
  if (typeof first !== 'string') return undefined;
  const mapping = dcmjs.constants.encodingMapping as Record<string, string>;
  const label = mapping[first.trim().replace(/[_ ]/g, '-').toLowerCase()];
  if (label === undefined) return undefined;
  try {
    return new TextDecoder(label, { fatal: true });
  } catch {
    return undefined;
  }
}

function isSevenBit(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}

/** Defined terms of a CS (e.g. Patient's Sex M/F/O), with the spelled-out forms older systems write. */
function enumerated(value: unknown, terms: readonly string[]): NormaliseResult {
  if (value === '' || value === undefined) return { kind: 'kept', value };
  if (typeof value !== 'string') return { kind: 'omitted', reason: 'not one of the defined terms' };
  if (terms.includes(value)) return { kind: 'kept', value };
  const first = { MALE: 'M', FEMALE: 'F', OTHER: 'O' }[value];
  if (first && terms.includes(first)) return { kind: 'normalised', value: first };
  return { kind: 'omitted', reason: `not one of the defined terms ${terms.join('/')}` };
}

function isEmpty(v: unknown): boolean {
  return v === '' || (Array.isArray(v) && v.length === 0);
}

/** Whether a Specific Character Set value uses ISO 2022 code extensions (escape sequences in text). */
function usesCodeExtensions(charset: unknown): boolean {
  const values = Array.isArray(charset) ? charset : [charset];
  return values.some((v) => typeof v === 'string' && v.startsWith('ISO 2022'));
}

/**
 * The Specific Character Set a derived object is written in. It carries the source's (copied by
 * derivedObjectHeader) as long as the bytes dcmjs writes mean the same in it: 7-bit text is the same
 * bytes in every DICOM character set, and ISO 2022 text read with code extensions is kept as its 7-bit
 * bytes, escape sequences included, so the patient name is written byte for byte as the source has it.
 * dcmjs writes any other text as UTF-8, which is then declared (ISO_IR 192).
 */
function writtenCharacterSet(ds: Dataset, inSourceBytes?: ReadonlyMap<string, SourceText>): unknown {
  const declared = ds.SpecificCharacterSet;
  const values = (Array.isArray(declared) ? declared : [declared]).filter((v) => typeof v === 'string');
  const codeExtensions = values.some((v) => v.startsWith('ISO 2022'));
  let sevenBit = true;
  let escape = false;
  const rest = inSourceBytes === undefined ? ds : withoutKeys(ds, [...inSourceBytes.keys()]);
  visitStrings(rest, (s) => {
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c > 0x7f) sevenBit = false;
      else if (c === 0x1b) escape = true;
    }
  });
  if (sevenBit && (!escape || codeExtensions)) return values.length > 0 ? declared : undefined;
  return 'ISO_IR 192';
}

function visitStrings(v: unknown, visit: (s: string) => void): void {
  if (typeof v === 'string') visit(v);
  else if (Array.isArray(v)) for (const x of v) visitStrings(x, visit);
  else if (v && typeof v === 'object' && !(v instanceof ArrayBuffer) && !ArrayBuffer.isView(v)) {
    for (const [k, x] of Object.entries(v)) if (k !== 'SpecificCharacterSet') visitStrings(x, visit);
  }
}

function withoutKey(ds: Dataset, key: string): Dataset {
  const { [key]: _, ...rest } = ds;
  return rest;
}

function withoutKeys(ds: Dataset, keys: readonly string[]): Dataset {
  const rest = { ...ds };
  for (const k of keys) delete rest[k];
  return rest;
}

/** DA, TM and the +/-HHMM offset of `d` in the process's local time zone. */
export function dicomDateTime(d: Date): { date: string; time: string; offset: string } {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  const date = `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}`;
  const time = `${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
  const off = -d.getTimezoneOffset();
  const sign = off >= 0 ? '+' : '-';
  const abs = Math.abs(off);
  return { date, time, offset: `${sign}${p(Math.floor(abs / 60))}${p(abs % 60)}` };
}
