// Named log events of the delivery stage (processor and destinations): one function per event, so every
// line has the same fields. Destination names, UIDs, statuses and counts only, never patient data.
import { errorMessage } from '../observability/error-message.ts';
import { log } from '../observability/log.ts';

const deliveryLog = log.child({ component: 'delivery' });

/** How a delivered object is named in the log line's message. */
const KIND_NAME = { sr: 'SR', seg: 'SEG' } as const;

export const deliveryEvents = {
  deferred(studyUid: string, sopInstanceUid: string, destination: string, until: number): void {
    deliveryLog.debug(
      { event: 'delivery.deferred', studyUid, sopInstanceUid, destination, until },
      'destination breaker open; delivery deferred',
    );
  },
  breakerOpen(destination: string): void {
    deliveryLog.warn({ event: 'delivery.breaker.open', destination }, 'destination breaker open');
  },
  /** One object landed at one destination; `kind` is absent on jobs queued before it was recorded. */
  done(fields: {
    studyUid: string;
    sopInstanceUid: string;
    kind: 'sr' | 'seg' | undefined;
    destination: string;
    attempt: number;
  }): void {
    deliveryLog.info(
      { event: 'delivery.done', ...fields },
      `${fields.kind ? KIND_NAME[fields.kind] : 'object'} delivered`,
    );
  },
  turnaroundNotRecorded(studyUid: string, err: unknown): void {
    deliveryLog.warn(
      { event: 'delivery.turnaround.unrecorded', studyUid, err: errorMessage(err) },
      'turnaround of a delivered report not recorded',
    );
  },
  warning(destination: string, sopInstanceUid: string, status: number, warnings: string[]): void {
    deliveryLog.warn(
      { event: 'delivery.warning', destination, sopInstanceUid, status, warnings },
      'delivered with warnings',
    );
  },
};
