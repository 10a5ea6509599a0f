// The contract every destination kind implements, and the two error classes that steer the
// delivery queue: transient (BullMQ retries with backoff) and permanent (BullMQ fails the job now).
import { UnrecoverableError } from 'bullmq';
import { requireUid } from '../dicom/uid.ts';
import { errorMessage } from '../observability/error-message.ts';

export interface DeliveryMeta {
  studyUid: string;
  sopInstanceUid: string;
}

export interface DeliveryReceipt {
  destination: string;
  kind: string;
  /** Where the object now lives: a file path or the URL it was posted to. */
  location: string;
  /** HTTP status for network destinations. */
  status?: number;
  /** Non-fatal remarks from the peer (e.g. STOW-RS 202 warning reasons). */
  warnings: string[];
}

export interface Destination {
  readonly name: string;
  readonly kind: string;
  deliver(part10: Buffer, meta: DeliveryMeta): Promise<DeliveryReceipt>;
}

/** HTTP answers worth retrying later: server errors, request timeout, too many requests. */
export function isTransientHttpStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 429;
}

/** Worth retrying later: network failure, timeout, 5xx, 408, 429, full disk. */
export class TransientDeliveryError extends Error {
  constructor(
    message: string,
    readonly destination: string,
    readonly status?: number,
    /** Server-suggested delay (Retry-After), when it gave one. */
    readonly retryAfterMs?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'TransientDeliveryError';
  }
}

/** Retrying cannot help: the peer rejected the object or the request. BullMQ fails the job at once. */
export class PermanentDeliveryError extends UnrecoverableError {
  constructor(
    message: string,
    readonly destination: string,
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(message);
    this.name = 'PermanentDeliveryError';
    if (options?.cause !== undefined) (this as { cause?: unknown }).cause = options.cause;
  }
}

/** Validates the delivery inputs shared by all kinds; a bad object is a permanent failure. */
export function checkDeliveryInput(
  destination: string,
  part10: Buffer,
  meta: DeliveryMeta,
): { studyUid: string; sopInstanceUid: string } {
  try {
    const studyUid = requireUid('studyUid', meta.studyUid);
    const sopInstanceUid = requireUid('sopInstanceUid', meta.sopInstanceUid);
    if (part10.length < 132 || part10.toString('latin1', 128, 132) !== 'DICM') {
      throw new Error('object is not a DICOM Part-10 file (no DICM prefix)');
    }
    return { studyUid, sopInstanceUid };
  } catch (e) {
    throw new PermanentDeliveryError(`invalid delivery input: ${errorMessage(e)}`, destination, undefined, {
      cause: e,
    });
  }
}
