import { readFile } from 'node:fs/promises';
import { UnrecoverableError, type Job } from 'bullmq';
import type { StudyIndex } from '../ingest/studies.ts';
import { log } from '../log.ts';
import type { DeliveryJob } from '../queue/jobs.ts';
import type { Destination } from './delivery/destination.ts';

/** Processor of the delivery queue: one SR to one destination; the destination classifies failures. */
export function createDeliveryProcessor(deps: { destinations: Map<string, Destination>; index: StudyIndex }) {
  return async (job: Job<DeliveryJob>) => {
    const { studyUid, sopInstanceUid, destination, path } = job.data;
    const dest = deps.destinations.get(destination);
    if (!dest) throw new UnrecoverableError(`destination '${destination}' is not configured`);
    let bytes: Buffer;
    try {
      bytes = await readFile(path);
    } catch (err) {
      throw new UnrecoverableError(`report file is missing: ${(err as Error).message}`);
    }
    const receipt = await dest.deliver(bytes, { studyUid, sopInstanceUid });
    await deps.index.deliveryDone(studyUid);
    log.info(
      { event: 'delivery.done', studyUid, sopInstanceUid, destination, attempt: job.attemptsMade + 1 },
      'report delivered',
    );
    return receipt;
  };
}
