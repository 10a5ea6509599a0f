import type { AssociationRecord } from '../../pipeline/keys.ts';
import type { AssociationSlots } from '../../pipeline/association-slots.ts';
import type { OnStored } from '../accept.ts';
import type { ObjectStore } from '../../storage/object-store.ts';
import type { PeerSettings } from './association-policy.ts';
import type { MppsHandler } from './mpps.ts';

export type { InstanceRecord } from '../../pipeline/instance-record.ts';

export interface DimseTlsOptions {
  /** 0 picks a free port; the bound one is returned as tlsPort. */
  port: number;
  /** PEM contents (not paths). */
  cert: string | Buffer;
  key: string | Buffer;
  ca?: string | Buffer;
  /** Refuse clients without a certificate that chains to `ca`. */
  requireClientCert: boolean;
}

export interface DimseServerOptions {
  /** Our AE title; associations calling any other title are rejected. */
  aeTitle: string;
  host: string;
  /** 0 picks a free port; the bound one is returned. */
  port: number;
  /** Largest P-DATA PDU we accept (we advertise the smaller of this and the peer's limit). */
  maxPduLength: number;
  /** Where instances go (init()'d by the caller). */
  store: ObjectStore;
  /**
   * The local directory whose disk the free-space watermark watches: the data directory. With an object
   * store that is not the filesystem, that is the local staging/cache disk only.
   */
  dataDir: string;
  /**
   * Indexes a stored instance (study index, completion timer). Success is answered only after it resolves;
   * if it throws, the sender gets 0xA700 and will resend.
   */
  onStored: OnStored;
  /**
   * Known peers; unknown calling AE titles are rejected unless promiscuous (unset: no peers ⇒ on; the
   * gateway always decides it with dimseAdmission, which also counts PACS destinations).
   */
  peers?: readonly PeerSettings[];
  promiscuous?: boolean;
  limits?: Partial<DimseLimits>;
  userIdentity?: { required: boolean; users: readonly { username: string; password: string }[] };
  tls?: DimseTlsOptions;
  /** Below this much free space on the data disk, C-STOREs get 0xA700 (default 0: no watermark). */
  minFreeBytes?: number;
  /** Largest instance accepted (default: no limit). */
  maxInstanceBytes?: number;
  /** Serves Modality Performed Procedure Step N-CREATE / N-SET (completion evidence) when set. */
  mpps?: MppsHandler;
  /** Counts associations across every gateway sharing the Redis (the limits become cluster-wide). */
  slots?: Pick<AssociationSlots, 'acquire'>;
  /** Every association that ends (or is rejected), for the admin console; must not throw. */
  onAssociationClosed?: (record: AssociationRecord) => void;
}

export interface DimseLimits {
  maxAssociations: number;
  maxAssociationsPerPeer: number;
  /** ARTIM: TCP connect to A-ASSOCIATE-RQ. */
  associationTimeoutMs: number;
  /** Longest silence between two PDUs. */
  idleTimeoutMs: number;
}

export interface DimseServer {
  port: number;
  /** Port of the TLS listener when one was configured. */
  tlsPort?: number;
  close(): Promise<void>;
}
