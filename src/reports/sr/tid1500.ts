// Builds a DICOM Comprehensive SR (PS3.3 A.35.3) carrying a TID 1500 Imaging Measurement Report
// for one model run: device observer, image library of every source instance, one TID 1501
// measurement group per finding. Output is a Part-10 file in Explicit VR Little Endian.
import dcmjs from 'dcmjs';
import type {
  ClassificationFinding,
  ExclusiveClassificationFinding,
  Finding,
  ModelResult,
  VolumeFinding,
} from '../../pipeline/findings.ts';
import { IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME } from '../../dicom/part10.ts';
import { EXPLICIT_VR_LITTLE_ENDIAN } from '../../dicom/transfer-syntax.ts';
import { requireUid, uidFromName } from '../../dicom/uid.ts';
import { normaliseValue, type NormaliseResult } from '../../dicom/value-normalise.ts';
import { reportsEvents } from '../events.ts';
import { CODES, STANDARD_CODING_SCHEMES } from './codes.ts';
import {
  codeItem,
  codeSequenceItem,
  container,
  imageItem,
  numItem,
  loValue,
  textItem,
  uidrefItem,
  type Dataset,
} from './content.ts';

export const COMPREHENSIVE_SR_SOP_CLASS = '1.2.840.10008.5.1.4.1.1.88.33';
export const SR_MANUFACTURER = 'dicom-ai-gateway';
const DCMR_UID = '1.2.840.10008.8.1.1';

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

export interface PredecessorRef {
  studyUid: string;
  seriesUid: string;
  sopInstanceUid: string;
  sopClassUid?: string;
}

export interface MeasurementReportInput {
  result: ModelResult;
  /** Naturalized (dcmjs) dataset of the first source instance. */
  sourceHeader: Record<string, unknown>;
  sopInstanceUid: string;
  seriesInstanceUid: string;
  seriesNumber?: number;
  instanceNumber?: number;
  /** An earlier report this one supersedes (Predecessor Documents Sequence). */
  predecessor?: PredecessorRef;
  now?: Date;
}

export class ReportInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReportInputError';
  }
}

export function buildMeasurementReport(input: MeasurementReportInput): Buffer {
  const { result, sourceHeader } = input;
  const sopInstanceUid = requireUid('sopInstanceUid', input.sopInstanceUid);
  const seriesInstanceUid = requireUid('seriesInstanceUid', input.seriesInstanceUid);
  const studyUid = requireUid('StudyInstanceUID', sourceHeader.StudyInstanceUID);
  if (result.sources.length === 0) throw new ReportInputError('a report needs at least one source instance');
  // TID 1500 needs at least one measurement group; a negative result is still a finding (Absent).
  if (result.findings.length === 0) throw new ReportInputError('a report needs at least one finding');
  const seriesNumber = positiveInt('seriesNumber', input.seriesNumber ?? 9000);
  const instanceNumber = positiveInt('instanceNumber', input.instanceNumber ?? 1);
  const now = input.now ?? new Date();
  const { date, time, offset } = dicomDateTime(now);

  const sources = result.sources.map((s, i) => ({
    sopClassUid: requireUid(`sources[${i}].sopClassUid`, s.sopClassUid),
    sopInstanceUid: requireUid(`sources[${i}].sopInstanceUid`, s.sopInstanceUid),
    seriesUid: requireUid(`sources[${i}].seriesUid`, s.seriesUid),
  }));

  // SOP Common, Patient + General Study (copied, so the SR lands in the source study), SR Document Series
  const ds: Dataset = derivedObjectHeader({
    sopClassUid: COMPREHENSIVE_SR_SOP_CLASS,
    sopInstanceUid,
    source: sourceHeader,
    studyUid,
    modality: 'SR',
    seriesInstanceUid,
    seriesNumber,
    when: { date, time, offset },
  });
  ds.SeriesDescription = loValue(`AI: ${result.model.name}`);
  ds.ReferencedPerformedProcedureStepSequence = [];
  // General Equipment
  ds.Manufacturer = SR_MANUFACTURER;
  // SR Document General
  ds.InstanceNumber = instanceNumber;
  ds.CompletionFlag = 'COMPLETE';
  ds.VerificationFlag = 'UNVERIFIED';
  ds.ContentDate = date;
  ds.ContentTime = time;
  ds.PerformedProcedureCodeSequence = [];
  ds.CurrentRequestedProcedureEvidenceSequence = [evidence(studyUid, sources)];
  if (input.predecessor) {
    const p = input.predecessor;
    ds.PredecessorDocumentsSequence = [
      evidence(requireUid('predecessor.studyUid', p.studyUid), [
        {
          seriesUid: requireUid('predecessor.seriesUid', p.seriesUid),
          sopInstanceUid: requireUid('predecessor.sopInstanceUid', p.sopInstanceUid),
          sopClassUid: requireUid('predecessor.sopClassUid', p.sopClassUid ?? COMPREHENSIVE_SR_SOP_CLASS),
        },
      ]),
    ];
  }
  // SR Document Content: the TID 1500 root container
  ds.ValueType = 'CONTAINER';
  ds.ConceptNameCodeSequence = [codeSequenceItem(CODES.imagingMeasurementReport)];
  ds.ContinuityOfContent = 'SEPARATE';
  ds.ContentTemplateSequence = [
    { MappingResource: 'DCMR', MappingResourceUID: DCMR_UID, TemplateIdentifier: '1500' },
  ];
  ds.ContentSequence = [
    codeItem('HAS CONCEPT MOD', CODES.languageOfContent, CODES.english),
    ...deviceObserver(result),
    codeItem('HAS CONCEPT MOD', CODES.procedureReported, procedureReported(sourceHeader.Modality)),
    container('CONTAINS', CODES.imageLibrary, [
      container(
        'CONTAINS',
        CODES.imageLibraryGroup,
        distinctInstances(sources).map((s) => imageItem('CONTAINS', s.sopClassUid, s.sopInstanceUid)),
      ),
    ]),
    container(
      'CONTAINS',
      CODES.imagingMeasurements,
      result.findings.map((f, i) => measurementGroup(f, i, result, sopInstanceUid)),
    ),
  ];
  const local = localCodingSchemes(ds, result.model);
  if (local.length > 0) ds.CodingSchemeIdentificationSequence = local;
  return writePart10(ds);
}

function deviceObserver(result: ModelResult): Dataset[] {
  const m = result.model;
  const items = [
    codeItem('HAS OBS CONTEXT', CODES.observerType, CODES.device),
    uidrefItem('HAS OBS CONTEXT', CODES.deviceObserverUid, m.uid),
  ];
  if (m.name) items.push(textItem('HAS OBS CONTEXT', CODES.deviceObserverName, m.name));
  if (m.manufacturer)
    items.push(textItem('HAS OBS CONTEXT', CODES.deviceObserverManufacturer, m.manufacturer));
  if (m.id) items.push(textItem('HAS OBS CONTEXT', CODES.deviceObserverModelName, m.id));
  return items;
}

/** TID 1501: one group per finding, in TID row order. */
function measurementGroup(f: Finding, index: number, result: ModelResult, srUid: string): Dataset {
  const label = f.label.trim();
  if (label.length === 0) throw new ReportInputError(`finding ${index} has an empty label`);
  const items: Dataset[] = [
    textItem('HAS OBS CONTEXT', CODES.trackingIdentifier, label),
    // Stable per report + finding, so a re-built identical report carries identical tracking UIDs.
    uidrefItem('HAS OBS CONTEXT', CODES.trackingUid, uidFromName(`${srUid}/finding/${index}/${label}`)),
    codeItem('CONTAINS', CODES.finding, f.concept),
    ...algorithmIdentification(result, f),
  ];
  if (f.kind === 'classification') items.push(...classificationItems(f));
  else if (f.kind === 'exclusive-classification') items.push(...exclusiveClassificationItems(f));
  else if (f.kind === 'volume') items.push(...volumeItems(f));
  else throw new ReportInputError(`finding ${index} has an unknown kind`);
  return container('CONTAINS', CODES.measurementGroup, items);
}

function algorithmIdentification(result: ModelResult, f: Finding): Dataset[] {
  const items = [
    textItem('HAS CONCEPT MOD', CODES.algorithmName, result.model.name || result.model.id),
    textItem('HAS CONCEPT MOD', CODES.algorithmVersion, result.model.version),
  ];
  if (f.kind === 'classification') {
    items.push(textItem('HAS CONCEPT MOD', CODES.algorithmParameters, `threshold=${f.threshold}`));
  } else if (f.kind === 'exclusive-classification') {
    items.push(
      textItem('HAS CONCEPT MOD', CODES.algorithmParameters, 'exclusive classes; most probable class'),
    );
  }
  return items;
}

function classificationItems(f: ClassificationFinding): Dataset[] {
  if (!Number.isFinite(f.probability) || f.probability < 0 || f.probability > 1) {
    throw new ReportInputError(`finding ${f.label}: probability ${f.probability} is outside [0, 1]`);
  }
  if (!Number.isFinite(f.threshold) || f.threshold < 0 || f.threshold > 1) {
    throw new ReportInputError(`finding ${f.label}: threshold ${f.threshold} is outside [0, 1]`);
  }
  return [
    numItem('CONTAINS', CODES.certaintyOfFinding, f.probability * 100, CODES.percent),
    // TID 1501 qualitative evaluation: the finding concept, valued Present/Absent by the threshold.
    codeItem('CONTAINS', f.concept, f.positive ? CODES.present : CODES.absent),
  ];
}

function checkProbability(label: string, p: number): void {
  if (!Number.isFinite(p) || p < 0 || p > 1)
    throw new ReportInputError(`finding ${label}: probability ${p} is outside [0, 1]`);
}

/**
 * Mutually exclusive classes: the most probable class is the finding, Present (never a set of Absent
 * classes, which would contradict itself for one image), with its certainty; then each class's
 * probability as a NUM item named by the class's concept.
 */
function exclusiveClassificationItems(f: ExclusiveClassificationFinding): Dataset[] {
  checkProbability(f.label, f.probability);
  if (!f.classes.some((c) => c.label === f.label))
    throw new ReportInputError(`finding ${f.label}: the most probable class is not among its classes`);
  for (const c of f.classes) {
    checkProbability(c.label, c.probability);
    if (c.probability > f.probability)
      throw new ReportInputError(`finding ${f.label}: class ${c.label} is more probable than the finding`);
  }
  return [
    numItem('CONTAINS', CODES.certaintyOfFinding, f.probability * 100, CODES.percent),
    codeItem('CONTAINS', f.concept, CODES.present),
    ...f.classes.map((c) => numItem('CONTAINS', c.concept, c.probability * 100, CODES.percent)),
  ];
}

function volumeItems(f: VolumeFinding): Dataset[] {
  if (!Number.isFinite(f.volumeMl) || f.volumeMl < 0) {
    throw new ReportInputError(`finding ${f.label}: volume ${f.volumeMl} is not a non-negative number`);
  }
  return [numItem('CONTAINS', CODES.volume, f.volumeMl, CODES.milliliter)];
}

function procedureReported(modality: unknown) {
  if (modality === 'CT') return CODES.ctUnspecified;
  if (modality === 'MR') return CODES.mrUnspecified;
  return CODES.imagingProcedure;
}

/** CodingSchemeIdentificationSequence items for every non-standard scheme the document uses. */
function localCodingSchemes(ds: Dataset, model: ModelResult['model']): Dataset[] {
  const schemes = new Set<string>();
  const visit = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(visit);
    else if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (k === 'CodingSchemeDesignator' && typeof x === 'string') schemes.add(x);
        else visit(x);
      }
    }
  };
  visit(ds);
  return [...schemes]
    .filter((s) => !STANDARD_CODING_SCHEMES.has(s))
    .sort()
    .map((s) => ({
      CodingSchemeDesignator: s,
      CodingSchemeName: loValue(`Local codes of ${model.name || model.id}`),
      CodingSchemeResponsibleOrganization: loValue(model.manufacturer || SR_MANUFACTURER),
    }));
}

/** Each instance once, in first-seen order (a volume lists every frame of a multi-frame image). */
function distinctInstances<T extends { sopInstanceUid: string }>(refs: readonly T[]): T[] {
  const seen = new Set<string>();
  return refs.filter((r) => !seen.has(r.sopInstanceUid) && seen.add(r.sopInstanceUid));
}

type InstanceRef = { seriesUid: string; sopInstanceUid: string; sopClassUid: string };

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

/** Hierarchical SOP Instance Reference Macro (PS3.3 Table C.17-3) for one study. */
function evidence(studyUid: string, refs: readonly InstanceRef[]): Dataset {
  return {
    StudyInstanceUID: studyUid,
    ReferencedSeriesSequence: referencedSeries(refs, 'ReferencedSOPSequence'),
  };
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
  const characterSet = writtenCharacterSet(ds);
  dict.dict = DicomMetaDictionary.denaturalizeDataset(
    characterSet === undefined
      ? withoutKey(ds, 'SpecificCharacterSet')
      : { ...ds, SpecificCharacterSet: characterSet },
  );
  const out: ArrayBuffer = dict.write();
  return Buffer.from(out);
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
  copyPatientAndStudy(o.source, ds, { object: o.modality, studyUid: o.studyUid });
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
): void {
  const codeExtensions = usesCodeExtensions(source.SpecificCharacterSet);
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
  }
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
function writtenCharacterSet(ds: Dataset): unknown {
  const declared = ds.SpecificCharacterSet;
  const values = (Array.isArray(declared) ? declared : [declared]).filter((v) => typeof v === 'string');
  const codeExtensions = values.some((v) => v.startsWith('ISO 2022'));
  let sevenBit = true;
  let escape = false;
  visitStrings(ds, (s) => {
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

function positiveInt(field: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 2_147_483_647)
    throw new ReportInputError(`${field} must be an integer`);
  return v;
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
