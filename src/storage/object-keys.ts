// The relative keys of everything an ObjectStore holds. They derive from UIDs alone, validated before any
// key is built (a UID becomes a path segment on the filesystem backend), so Redis and job data need not
// carry them and no host path ever leaves the process that wrote the bytes.
import { isValidUid, requireUid } from '../dicom/uid.ts';

export interface InstanceKey {
  studyUid: string;
  seriesUid: string;
  sopInstanceUid: string;
}

const STUDIES = 'studies/';
const OUTBOX = 'outbox/';
const SUFFIX = '.dcm';

export const objectKey = {
  /** A spooled instance: studies/<Study>/<Series>/<SOP>.dcm */
  instance(k: InstanceKey): string {
    const study = requireUid('StudyInstanceUID', k.studyUid);
    const series = requireUid('SeriesInstanceUID', k.seriesUid);
    const sop = requireUid('SOPInstanceUID', k.sopInstanceUid);
    return `${STUDIES}${study}/${series}/${sop}${SUFFIX}`;
  },
  /** Every instance of a study. */
  studyPrefix: (studyUid: string) => `${STUDIES}${requireUid('StudyInstanceUID', studyUid)}/`,
  /** All spooled studies. */
  studiesPrefix: STUDIES,
  /** An SR or SEG waiting for its deliveries: outbox/<Study>/<SOP>.dcm */
  outbox: (studyUid: string, sopInstanceUid: string) =>
    `${OUTBOX}${requireUid('StudyInstanceUID', studyUid)}/${requireUid('SOPInstanceUID', sopInstanceUid)}${SUFFIX}`,
  outboxPrefix: (studyUid: string) => `${OUTBOX}${requireUid('StudyInstanceUID', studyUid)}/`,
};

/** The UIDs of an instance key, or undefined for anything else (a stray object, a hostile name). */
export function parseInstanceKey(key: string): InstanceKey | undefined {
  if (!key.startsWith(STUDIES) || !key.endsWith(SUFFIX)) return undefined;
  const parts = key.slice(STUDIES.length, -SUFFIX.length).split('/');
  if (parts.length !== 3 || !parts.every((p) => isValidUid(p))) return undefined;
  const [studyUid, seriesUid, sopInstanceUid] = parts as [string, string, string];
  return { studyUid, seriesUid, sopInstanceUid };
}
