// Modality Performed Procedure Step SOP Class (PS3.4 Annex F.7), SCP side: N-CREATE and N-SET data sets
// are read into plain steps for the MPPS store (pipeline/mpps.ts), and each outcome becomes the status
// PS3.4 F.7.2 names. Every data set is hostile: only the attributes completion needs are read, checked and
// bounded; the rest (patient, procedure codes) is ignored and never logged.
import { isValidUid, trimUid } from '../../dicom/uid.ts';
import {
  MPPS_STATES,
  type CreateOutcome,
  type MppsCreate,
  type MppsState,
  type MppsUpdate,
  type PerformedSeries,
  type SetOutcome,
} from '../../pipeline/mpps.ts';

export const MPPS_SOP_CLASS = '1.2.840.10008.3.1.2.3.3';

/** What the SCP calls; the gateway wires the MPPS store (pipeline/mpps.ts) in. */
export interface MppsHandler {
  create(mppsUid: string, step: MppsCreate): Promise<CreateOutcome>;
  set(mppsUid: string, update: MppsUpdate): Promise<SetOutcome>;
}

// PS3.7 Annex C statuses, as PS3.4 F.7.2.1.2 / F.7.2.2.2 use them for MPPS.
export const MPPS_STATUS = {
  success: 0x0000,
  /** 0106H Invalid attribute value (e.g. a Performed Procedure Step Status that is not allowed here). */
  invalidAttributeValue: 0x0106,
  /** 0110H Processing failure; with Error ID A710H: the step may no longer be updated (F.7.2.2.2). */
  processingFailure: 0x0110,
  /** 0111H Duplicate SOP Instance (N-CREATE of a step that exists). */
  duplicateSopInstance: 0x0111,
  /** 0112H No such SOP Instance (N-SET of a step we do not know). */
  noSuchSopInstance: 0x0112,
  /** 0117H Invalid object instance (a missing or malformed SOP Instance UID). */
  invalidObjectInstance: 0x0117,
  /** 0120H Missing attribute (a Type 1 attribute completion needs is absent). */
  missingAttribute: 0x0120,
} as const;
/** Error ID (0000,0903) with 0110H when an N-SET reaches a COMPLETED or DISCONTINUED step (PS3.4 F.7.2.2.2). */
export const MPPS_ERROR_ID_NO_LONGER_UPDATABLE = 0xa710;

/** Bounds on what one step may announce: more is not a real procedure, and is refused. */
export const MAX_PERFORMED_SERIES = 1000;
export const MAX_ANNOUNCED_INSTANCES = 100_000;

export class MppsRefusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'MppsRefusal';
  }
}

type Elements = Record<string, unknown>;

/** N-CREATE attribute list → a new step. Throws MppsRefusal with the status to answer. */
export function readCreate(ds: Elements, callingAe: string): MppsCreate {
  const status = readState(ds.PerformedProcedureStepStatus);
  if (status === undefined)
    throw new MppsRefusal(MPPS_STATUS.missingAttribute, 'Performed Procedure Step Status missing');
  // F.7.2.1: a step is created IN PROGRESS.
  if (status !== 'IN PROGRESS')
    throw new MppsRefusal(MPPS_STATUS.invalidAttributeValue, `a step is created IN PROGRESS, not ${status}`);
  const studies = new Set<string>();
  for (const item of items(ds.ScheduledStepAttributesSequence)) {
    const uid = trimUid(item.StudyInstanceUID);
    if (!isValidUid(uid))
      throw new MppsRefusal(MPPS_STATUS.invalidAttributeValue, 'invalid Study Instance UID');
    studies.add(uid);
  }
  if (studies.size === 0)
    throw new MppsRefusal(
      MPPS_STATUS.missingAttribute,
      'Scheduled Step Attributes Sequence with a Study Instance UID missing',
    );
  return { studies: [...studies], state: status, series: readSeries(ds) ?? [], callingAe };
}

/** N-SET modification list → the update. Throws MppsRefusal with the status to answer. */
export function readSet(ds: Elements): MppsUpdate {
  const update: MppsUpdate = {};
  if (ds.PerformedProcedureStepStatus !== undefined) {
    const state = readState(ds.PerformedProcedureStepStatus);
    if (state === undefined)
      throw new MppsRefusal(MPPS_STATUS.invalidAttributeValue, 'invalid Performed Procedure Step Status');
    update.state = state;
  }
  const series = readSeries(ds);
  if (series !== undefined) update.series = series;
  const reason = items(ds.PerformedProcedureStepDiscontinuationReasonCodeSequence)[0];
  const meaning = reason === undefined ? undefined : text(reason.CodeMeaning) || text(reason.CodeValue);
  if (meaning) update.reason = meaning.slice(0, 64);
  return update;
}

function readState(value: unknown): MppsState | undefined {
  const s = text(value);
  return MPPS_STATES.find((state) => state === s);
}

/** Performed Series Sequence (0040,0340), or undefined when the data set does not carry it. */
function readSeries(ds: Elements): PerformedSeries[] | undefined {
  if (ds.PerformedSeriesSequence === undefined) return undefined;
  const list = items(ds.PerformedSeriesSequence);
  if (list.length > MAX_PERFORMED_SERIES)
    throw new MppsRefusal(MPPS_STATUS.invalidAttributeValue, 'too many performed series');
  let total = 0;
  const series: PerformedSeries[] = [];
  for (const item of list) {
    const seriesUid = trimUid(item.SeriesInstanceUID);
    if (!isValidUid(seriesUid))
      throw new MppsRefusal(MPPS_STATUS.invalidAttributeValue, 'invalid Series Instance UID');
    const instances: string[] = [];
    // Images, and the non-image composites (SR, presentation states...) the step made.
    for (const ref of [
      ...items(item.ReferencedImageSequence),
      ...items(item.ReferencedNonImageCompositeSOPInstanceSequence),
    ]) {
      const sop = trimUid(ref.ReferencedSOPInstanceUID);
      if (!isValidUid(sop))
        throw new MppsRefusal(MPPS_STATUS.invalidAttributeValue, 'invalid Referenced SOP Instance UID');
      instances.push(sop);
    }
    total += instances.length;
    if (total > MAX_ANNOUNCED_INSTANCES)
      throw new MppsRefusal(MPPS_STATUS.invalidAttributeValue, 'too many referenced instances');
    series.push({ seriesUid, instances });
  }
  return series;
}

function items(value: unknown): Elements[] {
  const list = Array.isArray(value) ? value : value === undefined || value === null ? [] : [value];
  return list.filter((v): v is Elements => typeof v === 'object' && v !== null && !Array.isArray(v));
}

function text(value: unknown): string {
  const v = Array.isArray(value) ? value[0] : value;
  return typeof v === 'string' ? v.trim() : '';
}
