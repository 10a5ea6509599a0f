// Named log events of the DIMSE front door: one function per event, so every line has the same fields.
// They carry AE titles, addresses, UIDs and counts only: never patient names, IDs or birth dates.
import { errorMessage } from '../../observability/error-message.ts';
import { log } from '../../observability/log.ts';
import { statusHex } from '../../dicom/status.ts';

const dimseLog = log.child({ component: 'dimse' });

export interface PeerInfo {
  callingAe: string;
  calledAe: string;
  address: string;
}

export function listening(host: string, port: number, aeTitle: string): void {
  dimseLog.info({ event: 'dimse.listening', host, port, aeTitle }, 'DIMSE SCP listening');
}

export function promiscuousWithPacs(destinations: string[]): void {
  dimseLog.warn(
    { event: 'dimse.promiscuous_with_pacs', destinations },
    'dimse.promiscuous is on while studies are delivered into a PACS: any host that can reach the DIMSE port can store',
  );
}

export function associationAccepted(
  peer: PeerInfo,
  accepted: number,
  rejected: number,
  maxPdu: number,
  username?: string,
): void {
  dimseLog.info(
    {
      event: 'dimse.association.accepted',
      ...peer,
      acceptedContexts: accepted,
      rejectedContexts: rejected,
      maxPdu,
      ...(username !== undefined ? { username } : {}),
    },
    'association accepted',
  );
}

export function associationRejected(peer: Partial<PeerInfo>, reason: string): void {
  dimseLog.warn({ event: 'dimse.association.rejected', ...peer, reason }, 'association rejected');
}

export function associationClosed(
  peer: PeerInfo,
  counts: { stored: number; failed: number },
  durationMs: number,
  aborted: boolean,
): void {
  dimseLog.info(
    { event: 'dimse.association.closed', ...peer, ...counts, durationMs, aborted },
    'association closed',
  );
}

export function instanceStored(
  peer: PeerInfo,
  sopClassUid: string,
  transferSyntaxUid: string,
  size: number,
): void {
  dimseLog.debug(
    { event: 'dimse.store.ok', callingAe: peer.callingAe, sopClassUid, transferSyntaxUid, size },
    'instance stored',
  );
}

export function instanceRefused(peer: PeerInfo, status: number, reason: string): void {
  dimseLog.warn(
    {
      event: 'dimse.store.refused',
      callingAe: peer.callingAe,
      address: peer.address,
      status: statusHex(status),
      reason,
    },
    'C-STORE refused',
  );
}

export function storeFailed(peer: PeerInfo, status: number, stage: string, err: unknown): void {
  dimseLog.error(
    {
      event: 'dimse.store.failed',
      callingAe: peer.callingAe,
      address: peer.address,
      status: statusHex(status),
      stage,
      err: err instanceof Error ? err : new Error(String(err)),
    },
    'C-STORE failed',
  );
}

export function protocolViolation(peer: Partial<PeerInfo>, violation: string): void {
  dimseLog.warn(
    { event: 'dimse.protocol.violation', ...peer, violation },
    'connection cut: protocol violation',
  );
}

export function listeningTls(host: string, port: number, requireClientCert: boolean): void {
  dimseLog.info({ event: 'dimse.listening.tls', host, port, requireClientCert }, 'DICOM TLS listening');
}

export function networkError(peer: Partial<PeerInfo>, err: unknown): void {
  dimseLog.warn({ event: 'dimse.network.error', ...peer, err: errorMessage(err) }, 'DIMSE network error');
}

/** The association history in Redis missed one record; the association itself went on. */
export function associationRecordFailed(err: unknown): void {
  dimseLog.warn(
    { event: 'dimse.association.record_failed', err: errorMessage(err) },
    'association not recorded',
  );
}

export function mppsReceived(peer: PeerInfo, operation: string, mppsUid: string, state: string): void {
  dimseLog.info(
    {
      event: 'dimse.mpps.received',
      callingAe: peer.callingAe,
      address: peer.address,
      operation,
      mppsUid,
      state,
    },
    'performed procedure step recorded',
  );
}

export function mppsRefused(
  peer: PeerInfo,
  operation: string,
  mppsUid: string,
  status: number,
  reason: string,
): void {
  dimseLog.warn(
    {
      event: 'dimse.mpps.refused',
      callingAe: peer.callingAe,
      address: peer.address,
      operation,
      mppsUid,
      status: statusHex(status),
      reason,
    },
    'performed procedure step refused',
  );
}

export function mppsFailed(peer: PeerInfo, operation: string, mppsUid: string, err: unknown): void {
  dimseLog.error(
    {
      event: 'dimse.mpps.failed',
      callingAe: peer.callingAe,
      address: peer.address,
      operation,
      mppsUid,
      err: errorMessage(err),
    },
    'performed procedure step could not be recorded',
  );
}
