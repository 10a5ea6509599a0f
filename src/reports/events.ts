// Named log events of the reports stage (SR and SEG writing): one function per event, so every line has
// the same fields. UIDs, model ids, attribute keywords and tags, and reasons only, never patient data or
// values.
import { errorMessage } from '../observability/error-message.ts';
import { log } from '../observability/log.ts';

const reportsLog = log.child({ component: 'reports' });

export const reportsEvents = {
  /** The images cannot carry a SEG (e.g. no usable geometry); the SR still goes out. */
  segSkipped(studyUid: string, model: string, err: unknown): void {
    reportsLog.warn(
      { event: 'reports.seg.skipped', studyUid, model, reason: errorMessage(err) },
      'no SEG for this result',
    );
  },
  segEmpty(studyUid: string, model: string): void {
    reportsLog.info({ event: 'reports.seg.empty', studyUid, model }, 'no segment present; no SEG');
  },
  /**
   * A source attribute had no valid form for its VR and was left out of a derived object (SR or SEG);
   * the line names the attribute, never its value (it may be patient data).
   */
  attributeOmitted(fields: {
    object: string;
    studyUid: string;
    keyword: string;
    tag: string;
    vr: string;
    reason: string;
  }): void {
    reportsLog.warn(
      { event: 'reports.attribute.omitted', ...fields },
      'source attribute left out of the derived object',
    );
  },
};
