// Builds a DICOM Comprehensive SR (PS3.3 A.35.3) carrying a TID 1500 Imaging Measurement Report
// for one model run: device observer, image library of every source instance, one TID 1501
// measurement group per finding, over the header every derived object shares (../derived-object.ts).
// Output is a Part-10 file in Explicit VR Little Endian.
import type {
  ClassificationFinding,
  ExclusiveClassificationFinding,
  Finding,
  ModelResult,
  VolumeFinding,
} from '../../pipeline/findings.ts';
import { requireUid, uidFromName } from '../../dicom/uid.ts';
import {
  derivedObjectHeader,
  dicomDateTime,
  distinctInstances,
  referencedSeries,
  ReportInputError,
  SR_MANUFACTURER,
  writePart10,
  type InstanceRef,
} from '../derived-object.ts';
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
const DCMR_UID = '1.2.840.10008.8.1.1';

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

/** Hierarchical SOP Instance Reference Macro (PS3.3 Table C.17-3) for one study. */
function evidence(studyUid: string, refs: readonly InstanceRef[]): Dataset {
  return {
    StudyInstanceUID: studyUid,
    ReferencedSeriesSequence: referencedSeries(refs, 'ReferencedSOPSequence'),
  };
}

function positiveInt(field: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 2_147_483_647)
    throw new ReportInputError(`${field} must be an integer`);
  return v;
}
