import { readFile } from 'node:fs/promises';
import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import { audit } from '../pipeline/audit-trail.ts';
import type { StudyIndex } from '../pipeline/study-index.ts';
import { errorMessage } from '../observability/error-message.ts';
import { deliveries } from '../observability/metrics.ts';
import type { DeliveryJob } from '../pipeline/jobs.ts';
import type { DestinationBreakers } from './breaker.ts';
import { TransientDeliveryError, type Destination } from './destination.ts';
import { deliveryEvents } from './events.ts';

export interface DeliveryProcessorDeps {
  destinations: Map<string, Destination>;
  index: StudyIndex;
  /** Per-destination circuit breakers; without them every job goes straight to its destination. */
  breakers?: DestinationBreakers;
}

/**
 * Processor of the delivery queue: one object to one destination. The destination classifies failures
 * (transient: BullMQ retries with backoff; permanent: UnrecoverableError fails the job now); the
 * breaker of a destination that keeps failing defers its jobs instead of letting them hammer it.
 */
export function createDeliveryProcessor(deps: DeliveryProcessorDeps) {
  return async (job: Job<DeliveryJob>, token?: string) => {
    const { studyUid, sopInstanceUid, destination, path, kind } = job.data;
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
      bytes = await readFile(path);
    } catch (err) {
      throw new UnrecoverableError(`file to deliver is missing: ${errorMessage(err)}`);
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
