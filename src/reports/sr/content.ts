// SR content items as dcmjs naturalized datasets (PS3.3 C.17.3). Small, typed builders instead of
// dcmjs.sr's untyped template classes, so that every attribute we write is visible here.
import type { CodedConcept } from '../../pipeline/findings.ts';
import { requireUid } from '../../dicom/uid.ts';

export type Dataset = Record<string, unknown>;

export type RelationshipType =
  | 'CONTAINS'
  | 'HAS PROPERTIES'
  | 'HAS OBS CONTEXT'
  | 'HAS ACQ CONTEXT'
  | 'HAS CONCEPT MOD'
  | 'INFERRED FROM'
  | 'SELECTED FROM';

export class InvalidConceptError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidConceptError';
  }
}

const SH_MAX = 16;
const LO_MAX = 64;

/** Code Sequence Macro item (PS3.3 Table 8.8-1) with Code Value / Long Code Value / URN Code Value. */
export function codeSequenceItem(c: CodedConcept): Dataset {
  const value = c.value.trim();
  const scheme = c.scheme.trim();
  const meaning = c.meaning.trim();
  if (value.length === 0) throw new InvalidConceptError('coded concept has an empty value');
  if (scheme.length === 0 || scheme.length > SH_MAX || hasControlOrBackslash(scheme)) {
    throw new InvalidConceptError(
      `coding scheme designator ${JSON.stringify(scheme)} is not a valid SH value`,
    );
  }
  if (meaning.length === 0 || meaning.length > LO_MAX || hasControlOrBackslash(meaning)) {
    throw new InvalidConceptError(
      `code meaning ${JSON.stringify(meaning)} is not a valid LO value (1-64 chars)`,
    );
  }
  if (hasControlOrBackslash(value)) throw new InvalidConceptError('code value contains control characters');
  const item: Dataset = {};
  // Code Value is SH (16); longer values go to Long Code Value (UC), URNs to URN Code Value (UR).
  if (/^(urn|https?):/i.test(value)) item.URNCodeValue = value;
  else if (value.length > SH_MAX) item.LongCodeValue = value;
  else item.CodeValue = value;
  item.CodingSchemeDesignator = scheme;
  item.CodeMeaning = meaning;
  return item;
}

/** Backslash is the multi-value delimiter and control characters are invalid in SH/LO. */
export function hasControlOrBackslash(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f || c === 0x5c) return true;
  }
  return false;
}

/** Replaces control characters and backslashes with spaces (for free-text LO values). */
export function sanitizeLo(s: string): string {
  let out = '';
  for (const ch of s) {
    const c = ch.charCodeAt(0);
    out += c < 0x20 || c === 0x7f || c === 0x5c ? ' ' : ch;
  }
  return out;
}

/** A Long String (LO) value: sanitised as above and cut to LO's 64 characters. */
export function loValue(s: string): string {
  return sanitizeLo(s).slice(0, 64);
}

function base(rel: RelationshipType | undefined, valueType: string, name: CodedConcept | undefined): Dataset {
  const item: Dataset = {};
  if (rel !== undefined) item.RelationshipType = rel;
  item.ValueType = valueType;
  if (name !== undefined) item.ConceptNameCodeSequence = [codeSequenceItem(name)];
  return item;
}

export function container(
  rel: RelationshipType | undefined,
  name: CodedConcept,
  children: Dataset[],
  continuity: 'SEPARATE' | 'CONTINUOUS' = 'SEPARATE',
): Dataset {
  const item = base(rel, 'CONTAINER', name);
  item.ContinuityOfContent = continuity;
  if (children.length > 0) item.ContentSequence = children;
  return item;
}

export function codeItem(rel: RelationshipType, name: CodedConcept, value: CodedConcept): Dataset {
  const item = base(rel, 'CODE', name);
  item.ConceptCodeSequence = [codeSequenceItem(value)];
  return item;
}

export function textItem(rel: RelationshipType, name: CodedConcept, value: string): Dataset {
  if (value.length === 0) throw new InvalidConceptError(`TEXT item ${name.meaning} has an empty value`);
  const item = base(rel, 'TEXT', name);
  item.TextValue = value;
  return item;
}

export function uidrefItem(rel: RelationshipType, name: CodedConcept, uid: string): Dataset {
  const item = base(rel, 'UIDREF', name);
  item.UID = requireUid(name.meaning, uid);
  return item;
}

export function numItem(
  rel: RelationshipType,
  name: CodedConcept,
  value: number,
  unit: CodedConcept,
): Dataset {
  const item = base(rel, 'NUM', name);
  item.MeasuredValueSequence = [
    { MeasurementUnitsCodeSequence: [codeSequenceItem(unit)], NumericValue: formatDecimalString(value) },
  ];
  return item;
}

/** IMAGE reference (TID 1601 style: no concept name). */
export function imageItem(rel: RelationshipType, sopClassUid: string, sopInstanceUid: string): Dataset {
  const item = base(rel, 'IMAGE', undefined);
  item.ReferencedSOPSequence = [
    {
      ReferencedSOPClassUID: requireUid('ReferencedSOPClassUID', sopClassUid),
      ReferencedSOPInstanceUID: requireUid('ReferencedSOPInstanceUID', sopInstanceUid),
    },
  ];
  return item;
}

/**
 * A finite number as a DICOM DS string (at most 16 characters, PS3.5 Table 6.2-1), keeping as
 * many significant digits as fit.
 */
export function formatDecimalString(value: number): string {
  if (!Number.isFinite(value)) throw new InvalidConceptError(`numeric value ${value} is not finite`);
  for (let precision = 15; precision >= 1; precision--) {
    const s = String(Number(value.toPrecision(precision)));
    if (s.length <= 16) return s;
  }
  throw new InvalidConceptError(`numeric value ${value} cannot be written as a DS`);
}
