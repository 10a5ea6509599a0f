import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import { audit } from '../pipeline/audit-trail.ts';
import type { StudyIndex } from '../pipeline/study-index.ts';
import { errorMessage } from '../observability/error-message.ts';
import { deliveries, studyTurnaroundSeconds } from '../observability/metrics.ts';
import { priorityLane, ROUTINE_PRIORITY } from '../config/schema.ts';
import type { TurnaroundLog } from '../pipeline/turnaround.ts';
import type { DeliveryJob } from '../pipeline/jobs.ts';
import { objectKey } from '../storage/object-keys.ts';
import { ObjectNotFoundError, type ObjectStore } from '../storage/object-store.ts';
import type { DestinationBreakers } from './breaker.ts';
import { TransientDeliveryError, type Destination } from './destination.ts';
import { deliveryEvents } from './events.ts';

export interface DeliveryProcessorDeps {
  destinations: Map<string, Destination>;
  /** Where the objects to deliver wait (the outbox keys). */
  store: ObjectStore;
  index: StudyIndex;
  /** Per-destination circuit breakers; without them every job goes straight to its destination. */
  breakers?: DestinationBreakers;
  /** Where each delivered SR's receive → delivered time is kept for the console and the SLOs. */
  turnaround?: TurnaroundLog;
}

/** A delivered SR's receive → delivered time: the histogram, then the shared per-minute log. */
async function observeTurnaround(deps: DeliveryProcessorDeps, job: DeliveryJob, at: number): Promise<void> {
  if (job.kind !== 'sr' || job.receivedAt === undefined || job.model === undefined) return;
  const seconds = Math.max(0, at - job.receivedAt) / 1000;
  const lane = priorityLane(job.priority ?? ROUTINE_PRIORITY);
  studyTurnaroundSeconds.observe({ priority: lane, model: job.model }, seconds);
  try {
    await deps.turnaround?.record({ lane, model: job.model, rules: job.rules ?? [], seconds, at });
  } catch (err) {
    // The report is delivered: a lost sample is not worth delivering it again.
    deliveryEvents.turnaroundNotRecorded(job.studyUid, err);
  }
}

/**
 * Processor of the delivery queue: one object to one destination. The destination classifies failures
 * (transient: BullMQ retries with backoff; permanent: UnrecoverableError fails the job now); the
 * breaker of a destination that keeps failing defers its jobs instead of letting them hammer it.
 */
export function createDeliveryProcessor(deps: DeliveryProcessorDeps) {
  return async (job: Job<DeliveryJob>, token?: string) => {
    const { studyUid, sopInstanceUid, destination, kind } = job.data;
    const dest = deps.destinations.get(destination);
    if (!dest) throw new UnrecoverableError(`destination '${destination}' is not configured`);

    if (deps.breakers) {
      const gate = await deps.breakers.gate(destination);
      if (!gate.pass) {
        // Deferring does not use up an attempt: the job waits for the breaker's next probe.
        const until = gate.retryAt + Math.floor(Math.random() * 1000);
        deliveries.inc({ destination, result: 'deferred' });
        deliveryEvents.deferred(studyUid, sopInstanceUid, destination, until);
        await job.moveToDelayed(until, token);
        throw new DelayedError();
      }
    }

    let bytes: Buffer;
    try {
      bytes = await deps.store.get(objectKey.outbox(studyUid, sopInstanceUid));
    } catch (err) {
      // Gone for good (retention, a lost volume): no retry brings it back. A store that does not answer
      // is transient: BullMQ retries with backoff.
      if (err instanceof ObjectNotFoundError)
        throw new UnrecoverableError(`object to deliver is missing: ${errorMessage(err)}`);
      throw err;
    }
    let receipt;
    try {
      receipt = await dest.deliver(bytes, { studyUid, sopInstanceUid });
    } catch (err) {
      const transient = err instanceof TransientDeliveryError || !(err instanceof UnrecoverableError);
      deliveries.inc({ destination, result: transient ? 'transient' : 'permanent' });
      const breaker = await deps.breakers?.record(
        destination,
        dest.kind,
        transient ? 'transient' : 'permanent',
        errorMessage(err),
      );
      if (breaker === 'open') deliveryEvents.breakerOpen(destination);
      throw err;
    }
    deliveries.inc({ destination, result: 'success' });
    await observeTurnaround(deps, job.data, Date.now());
    await deps.breakers?.record(destination, dest.kind, 'success');
    // Jobs queued by an older version carry no run: they belong to the current one.
    const run = job.data.run ?? (await deps.index.currentRun(studyUid));
    await deps.index.deliveryDone(studyUid, run, job.id);
    await audit.record({
      type: 'delivered',
      studyUid,
      srUid: sopInstanceUid,
      destination,
      jobId: String(job.id),
      attempt: job.attemptsMade + 1,
    });
    deliveryEvents.done({ studyUid, sopInstanceUid, kind, destination, attempt: job.attemptsMade + 1 });
    return receipt;
  };
}
