import type { InstanceHeader } from '../dicom/part10.ts';

/**
 * One stored instance, as ingest hands it on and the study index keeps it: enough to route and to find
 * the object (its store key derives from the three UIDs: objectKey.instance), no patient data and no host
 * path (records written before the storage seam may still carry a `path`; nothing reads it). The same shape travels from the acceptor (DIMSE, STOW-RS) to Redis and back.
 */
export interface InstanceRecord extends InstanceHeader {
  studyUid: string;
  seriesUid: string;
  sopInstanceUid: string;
  sopClassUid: string;
  transferSyntaxUid: string;
  /** Object size in bytes, meta header included. */
  size: number;
  /** Calling AE title (DIMSE) or '' (STOW-RS, or re-indexed from the spool). */
  callingAe: string;
  /** Peer address ('' when re-indexed from the spool). */
  callingAddress: string;
  /** When the instance was acknowledged (epoch ms). */
  receivedAt: number;
}
