// Named log events of the reports stage (SR and SEG writing): one function per event, so every line has
// the same fields. UIDs, attribute keywords and tags, and reasons only, never patient data or values.
import { log } from '../observability/log.ts';

const reportsLog = log.child({ component: 'reports' });

export const reportsEvents = {
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
