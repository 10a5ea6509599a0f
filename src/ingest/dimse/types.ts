import type { InstanceHeader } from '../../dicom/part10.ts';
import type { Spool } from '../spool.ts';

/** An instance that is on disk in the spool (fsync'd, renamed into place) and about to be acknowledged. */
export interface StoredInstance extends InstanceHeader {
  studyUid: string;
  seriesUid: string;
  sopInstanceUid: string;
  sopClassUid: string;
  transferSyntaxUid: string;
  /** Final spool path of the Part-10 file. */
  path: string;
  /** File size in bytes, meta header included. */
  size: number;
  callingAe: string;
  callingAddress: string;
  /** ISO 8601 time at which the C-STORE request was answered. */
  receivedAt: string;
}

export interface DimseServerOptions {
  /** Our AE title; associations calling any other title are rejected. */
  aeTitle: string;
  host: string;
  /** 0 picks a free port; the bound one is returned. */
  port: number;
  /** Largest P-DATA PDU we accept (we advertise the smaller of this and the peer's limit). */
  maxPduLength: number;
  spool: Spool;
  /**
   * Indexes a stored instance (study index, completion timer). Success is answered only after it resolves;
   * if it throws, the sender gets 0xA700 and will resend.
   */
  onStored: (inst: StoredInstance) => Promise<void>;
}

export interface DimseServer {
  port: number;
  close(): Promise<void>;
}
