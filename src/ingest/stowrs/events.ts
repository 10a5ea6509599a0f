// Named log events of the STOW-RS front door. UIDs, sizes, statuses and reasons only: no patient data.
import { log } from '../../observability/log.ts';
import { statusHex } from '../../dicom/status.ts';

const stowLog = log.child({ component: 'stowrs' });

export function requestRejected(address: string, status: number, reason: string): void {
  stowLog.warn({ event: 'stowrs.request.rejected', address, status, reason }, 'STOW-RS request rejected');
}

export function partRefused(address: string, status: number, reason: string, sopInstanceUid?: string): void {
  stowLog.warn(
    { event: 'stowrs.part.refused', address, status: statusHex(status), reason, sopInstanceUid },
    'STOW-RS instance refused',
  );
}

export function partFailed(address: string, status: number, reason: string, err: unknown): void {
  stowLog.error(
    {
      event: 'stowrs.part.failed',
      address,
      status: statusHex(status),
      reason,
      err: err instanceof Error ? err : new Error(String(err)),
    },
    'STOW-RS instance failed',
  );
}

export function requestDone(
  address: string,
  user: string,
  httpStatus: number,
  counts: { stored: number; failed: number },
  durationMs: number,
): void {
  stowLog.info(
    { event: 'stowrs.request.done', address, user, httpStatus, ...counts, durationMs },
    'STOW-RS request done',
  );
}
