// Who may open an association with us, and how many at once: called AE title, known peers (AE title and
// optionally source address), promiscuous mode, user identity (username / username + passcode, PS3.7
// D.3.3.7), and concurrency limits overall and per peer. Pure bookkeeping: the SCP asks, then releases.
// The limits count this process's associations (decide); with `slots` they also hold across every gateway
// sharing the Redis (admit: pipeline/association-slots.ts), falling back to the local count alone when Redis
// does not answer within its bound.
import { findCredential } from '../../util/same-secret.ts';
import type { AssociationSlots } from '../../pipeline/association-slots.ts';
import dimse from 'dcmjs-dimse';

const { RejectReason, RejectResult, RejectSource, UserIdentityType } = dimse.constants;

export interface PeerSettings {
  aeTitle: string;
  host?: string;
  maxAssociations?: number;
  requireUserIdentity?: boolean;
  /** Subject CN of the TLS client certificate this AE title must come with. */
  certificateCN?: string;
}

export interface AssociationPolicyOptions {
  aeTitle: string;
  peers: readonly PeerSettings[];
  /** Unset: promiscuous exactly when no peers are configured (zero-config accepts any sender). */
  promiscuous?: boolean;
  maxAssociations: number;
  maxAssociationsPerPeer: number;
  userIdentity: { required: boolean; users: readonly { username: string; password: string }[] };
  /** Cluster-wide counting in Redis (several gateways); without it the limits are this process's. */
  slots?: Pick<AssociationSlots, 'acquire'>;
}

export interface AssociationRequest {
  calledAe: string | undefined;
  callingAe: string | undefined;
  address: string;
  /** Present when the association came over DICOM TLS. */
  tls?: { authorized: boolean; subjectCN?: string };
  /** Present when the A-ASSOCIATE-RQ carried a User Identity sub-item. */
  identity?: { type: number; primary: string; secondary: string; positiveResponseRequested: boolean };
}

export type AssociationDecision =
  | {
      accept: true;
      /** Frees the association's slots; call exactly once, when it closes. */
      release: () => void;
      /** The peer asked for a User Identity server response and its identity was verified. */
      confirmIdentity: boolean;
      username?: string;
    }
  | { accept: false; result: number; source: number; reason: number; text: string };

export class AssociationPolicy {
  private readonly peers: Map<string, PeerSettings>;
  readonly promiscuous: boolean;
  private active = 0;
  private readonly activePerAe = new Map<string, number>();

  constructor(private readonly opts: AssociationPolicyOptions) {
    this.peers = new Map(opts.peers.map((p) => [p.aeTitle, p]));
    this.promiscuous = opts.promiscuous ?? opts.peers.length === 0;
  }

  get activeAssociations(): number {
    return this.active;
  }

  decide(req: AssociationRequest): AssociationDecision {
    if (req.calledAe !== this.opts.aeTitle) {
      return reject(
        RejectResult.Permanent,
        RejectReason.CalledAeNotRecognized,
        'called AE title not recognised',
      );
    }
    const callingAe = req.callingAe;
    if (callingAe === undefined) {
      return reject(RejectResult.Permanent, RejectReason.CallingAeNotRecognized, 'calling AE title invalid');
    }
    const peer = this.peers.get(callingAe);
    if (peer === undefined && !this.promiscuous) {
      return reject(
        RejectResult.Permanent,
        RejectReason.CallingAeNotRecognized,
        'calling AE title not a known peer',
      );
    }
    if (peer?.host !== undefined && normaliseAddress(peer.host) !== normaliseAddress(req.address)) {
      return reject(
        RejectResult.Permanent,
        RejectReason.CallingAeNotRecognized,
        'calling AE title used from an address not configured for it',
      );
    }

    if (peer?.certificateCN !== undefined) {
      const tls = req.tls;
      if (tls === undefined || !tls.authorized || tls.subjectCN !== peer.certificateCN) {
        return reject(
          RejectResult.Permanent,
          RejectReason.CallingAeNotRecognized,
          tls === undefined
            ? 'calling AE title is bound to a TLS client certificate: plain TCP refused'
            : 'calling AE title is bound to another TLS client certificate subject',
        );
      }
    }

    const identity = this.checkIdentity(req, peer);
    if ('text' in identity) return identity;

    const perPeerLimit = peer?.maxAssociations ?? this.opts.maxAssociationsPerPeer;
    const mine = this.activePerAe.get(callingAe) ?? 0;
    if (this.active >= this.opts.maxAssociations || mine >= perPeerLimit) {
      return {
        accept: false,
        result: RejectResult.Transient,
        source: RejectSource.ServiceProviderPresentation,
        reason: RejectReason.LocalLimitExceeded,
        text:
          this.active >= this.opts.maxAssociations
            ? `too many associations (${this.opts.maxAssociations})`
            : `too many associations from this peer (${perPeerLimit})`,
      };
    }
    this.active++;
    this.activePerAe.set(callingAe, mine + 1);
    let released = false;
    return {
      accept: true,
      confirmIdentity: identity.confirm,
      username: identity.username,
      release: () => {
        if (released) return;
        released = true;
        this.active--;
        const left = (this.activePerAe.get(callingAe) ?? 1) - 1;
        if (left <= 0) this.activePerAe.delete(callingAe);
        else this.activePerAe.set(callingAe, left);
      },
    };
  }

  /**
   * decide(), then, for an association it accepts, the cluster-wide limits (`slots`): the same limits, the
   * same rejection (transient, local limit exceeded), counted over every gateway. One Redis round trip,
   * bounded by the slots' timeout; when Redis does not answer in time the local decision stands.
   */
  async admit(req: AssociationRequest): Promise<AssociationDecision> {
    const local = this.decide(req);
    const slots = this.opts.slots;
    if (!local.accept || slots === undefined || req.callingAe === undefined) return local;
    const callingAe = req.callingAe;
    const perPeerLimit = this.peers.get(callingAe)?.maxAssociations ?? this.opts.maxAssociationsPerPeer;
    let cluster;
    try {
      cluster = await slots.acquire([
        { scope: 'total', limit: this.opts.maxAssociations },
        { scope: `peer:${callingAe}`, limit: perPeerLimit },
      ]);
    } catch {
      return local; // acquire() does not reject; should it, the local limits hold
    }
    if (cluster.outcome === 'full') {
      local.release();
      return {
        accept: false,
        result: RejectResult.Transient,
        source: RejectSource.ServiceProviderPresentation,
        reason: RejectReason.LocalLimitExceeded,
        text:
          cluster.index === 0
            ? `too many associations across the gateways (${this.opts.maxAssociations})`
            : `too many associations from this peer across the gateways (${perPeerLimit})`,
      };
    }
    const releaseLocal = local.release;
    const releaseCluster = cluster.release;
    return {
      ...local,
      release: () => {
        releaseLocal();
        releaseCluster();
      },
    };
  }

  private checkIdentity(
    req: AssociationRequest,
    peer: PeerSettings | undefined,
  ): { confirm: boolean; username?: string } | Extract<AssociationDecision, { accept: false }> {
    const required = this.opts.userIdentity.required || peer?.requireUserIdentity === true;
    const id = req.identity;
    const noGood = (text: string) => reject(RejectResult.Permanent, RejectReason.NoReasonGiven, text);
    if (id === undefined) return required ? noGood('user identity required') : { confirm: false };

    const users = this.opts.userIdentity.users;
    if (id.type === UserIdentityType.UsernameAndPasscode) {
      const user = findCredential(
        users,
        id.primary,
        id.secondary,
        (u) => u.username,
        (u) => u.password,
      );
      if (user === undefined) {
        // Wrong credentials are refused even when identity is optional: someone is guessing.
        return users.length > 0 || required ? noGood('user identity not accepted') : { confirm: false };
      }
      return { confirm: id.positiveResponseRequested, username: user.username };
    }
    if (id.type === UserIdentityType.Username) {
      // A bare username proves nothing; it counts only where no passcode is configured for it.
      if (required) return noGood('user identity needs a passcode');
      return { confirm: false, username: id.primary };
    }
    // Kerberos, SAML and JWT are not supported: ignored unless identity is required.
    return required ? noGood(`user identity type ${id.type} not supported`) : { confirm: false };
  }
}

function reject(
  result: number,
  reason: number,
  text: string,
): Extract<AssociationDecision, { accept: false }> {
  return { accept: false, result, source: RejectSource.ServiceUser, reason, text };
}

/** '::ffff:127.0.0.1' and '127.0.0.1' are the same peer. */
function normaliseAddress(address: string): string {
  return address.replace(/^::ffff:/i, '').toLowerCase();
}
