// One SCP instance per TCP connection: association negotiation, C-ECHO, and C-STORE streamed to the spool.
// A C-STORE is answered Success only once the instance is durable in the spool and onStored has indexed it.
import { stat } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { Writable } from 'node:stream';
import dimse from 'dcmjs-dimse';
import type { association, requests, responses } from 'dcmjs-dimse';
import {
  encodeFileMetaHeader,
  normaliseAeTitle,
  readInstanceHeader,
  type InstanceHeader,
} from '../../dicom/part10.ts';
import { isValidUid } from '../../dicom/uid.ts';
import type { Spool } from '../spool.ts';
import * as events from './events.ts';
import { chooseTransferSyntax, isAcceptedAbstractSyntax } from './policy.ts';
import type { StoredInstance } from './types.ts';

const { Scp, Dataset, constants } = dimse;
const { CEchoResponse, CStoreResponse } = dimse.responses;
const { PresentationContextResult, RejectReason, RejectResult, RejectSource, Status } = constants;

type Association = association.Association;
type PresentationContext = association.PresentationContext;
type CEchoRequest = requests.CEchoRequest;
type CStoreRequest = requests.CStoreRequest;
type CStoreResponse = responses.CStoreResponse;
type CEchoResponse = responses.CEchoResponse;

// C-STORE failure statuses (PS3.4 Table B.2-1).
export const STATUS_OUT_OF_RESOURCES = 0xa700;
export const STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xa900;
export const STATUS_CANNOT_UNDERSTAND = 0xc000;

/** What every connection of one server shares. */
export interface ScpContext {
  aeTitle: string;
  maxPduLength: number;
  spool: Spool;
  onStored: (inst: StoredInstance) => Promise<void>;
  /** Stores still running, so that close() can wait for them. */
  inflight: Set<Promise<unknown>>;
  sockets: Set<Socket>;
}

interface Refusal {
  status: number;
  reason: string;
}

/** One C-STORE dataset on its way to disk. */
interface Transfer {
  tempPath: string | undefined;
  stream: Writable;
  closed: Promise<void>;
  writeError?: Error;
  refusal?: Refusal;
}

type ScpOptions = ConstructorParameters<typeof Scp>[1];

export function createScpClass(ctx: ScpContext): typeof Scp {
  return class GatewayScp extends Scp {
    private readonly peer = { callingAe: '', calledAe: '', address: '' };
    private readonly openedAt = Date.now();
    private readonly transfers = new Map<CStoreRequest, Transfer>();
    private readonly counts = { stored: 0, failed: 0 };
    private accepted = false;
    private aborted = false;

    private readonly socket: Socket;

    constructor(socket: Socket, opts?: ScpOptions) {
      super(socket, opts);
      this.socket = socket;
      // Without this every C-STORE response waits ~40 ms for Nagle + delayed ACK.
      socket.setNoDelay(true);
      this.peer.address = socket.remoteAddress ?? '';
      ctx.sockets.add(socket);
      this.on('networkError', (err: unknown) => events.networkError(this.peer, err));
      this.on('close', () => {
        ctx.sockets.delete(socket);
        this.onClosed();
      });
    }

    override associationRequested(assoc: Association): void {
      const calledAe = normaliseAeTitle(assoc.getCalledAeTitle());
      const callingAe = normaliseAeTitle(assoc.getCallingAeTitle());
      this.peer.calledAe = calledAe ?? '';
      this.peer.callingAe = callingAe ?? '';
      if (calledAe !== ctx.aeTitle) {
        events.associationRejected(this.peer, 'called AE title not recognised');
        this.sendAssociationReject(
          RejectResult.Permanent,
          RejectSource.ServiceUser,
          RejectReason.CalledAeNotRecognized,
        );
        return;
      }
      if (callingAe === undefined) {
        events.associationRejected(this.peer, 'calling AE title invalid');
        this.sendAssociationReject(
          RejectResult.Permanent,
          RejectSource.ServiceUser,
          RejectReason.CallingAeNotRecognized,
        );
        return;
      }

      let accepted = 0;
      let rejected = 0;
      for (const { context } of assoc.getPresentationContexts()) {
        if (!isAcceptedAbstractSyntax(context.getAbstractSyntaxUid())) {
          context.setResult(PresentationContextResult.RejectAbstractSyntaxNotSupported);
          rejected++;
          continue;
        }
        const ts = chooseTransferSyntax(context.getTransferSyntaxUids());
        if (ts === undefined) {
          context.setResult(PresentationContextResult.RejectTransferSyntaxesNotSupported);
          rejected++;
        } else {
          context.setResult(PresentationContextResult.Accept, ts);
          accepted++;
        }
      }
      // Advertise the smaller of our limit and the peer's (0 = the peer has no limit).
      const peerMax = assoc.getMaxPduLength();
      const maxPdu = peerMax > 0 ? Math.min(peerMax, ctx.maxPduLength) : ctx.maxPduLength;
      assoc.setMaxPduLength(maxPdu);
      this.accepted = true;
      events.associationAccepted(this.peer, accepted, rejected, maxPdu);
      this.sendAssociationAccept();
    }

    override associationReleaseRequested(): void {
      this.sendAssociationReleaseResponse();
    }

    override abort(): void {
      // PS3.8 §7.3: the acceptor closes the transport after an A-ABORT (the peer waits for it, ~30 s in dcmtk).
      this.aborted = true;
      this.socket.destroy();
    }

    override cEchoRequest(request: CEchoRequest, callback: (response: CEchoResponse) => void): void {
      const response = CEchoResponse.fromRequest(request);
      response.setStatus(Status.Success);
      callback(response);
    }

    /** Called by the library at the first dataset fragment; every fragment is then written to the result. */
    override createStoreWritableStream(context: PresentationContext, request: CStoreRequest): Writable {
      let meta: Buffer;
      try {
        meta = encodeFileMetaHeader({
          sopClassUid: request.getAffectedSopClassUid(),
          sopInstanceUid: request.getAffectedSopInstanceUid(),
          transferSyntaxUid: context.getAcceptedTransferSyntaxUid() ?? '',
          sourceAeTitle: this.peer.callingAe,
        });
      } catch (err) {
        // A command with invalid UIDs: swallow its dataset without touching the disk, refuse it afterwards.
        const sink = new Writable({ write: (_chunk, _enc, done) => done() });
        const reason = err instanceof Error ? err.message : 'invalid command';
        this.track(request, sink, undefined, { status: STATUS_CANNOT_UNDERSTAND, reason });
        return sink;
      }
      const { path: tempPath, stream } = ctx.spool.createTempWriteStream();
      this.track(request, stream, tempPath);
      stream.write(meta);
      return stream;
    }

    /** Called right after the library ends the stream; the store itself waits for the file in cStoreRequest. */
    override createDatasetFromStoreWritableStream(
      _writable: Writable,
      context: PresentationContext,
      callback: (dataset: InstanceType<typeof Dataset>) => void,
    ): void {
      callback(new Dataset({}, context.getAcceptedTransferSyntaxUid()));
    }

    override cStoreRequest(request: CStoreRequest, callback: (response: CStoreResponse) => void): void {
      const work = this.store(request).then((response) => {
        try {
          callback(response);
        } catch (err) {
          events.networkError(this.peer, err);
        }
      });
      ctx.inflight.add(work);
      void work.finally(() => ctx.inflight.delete(work));
    }

    private track(
      request: CStoreRequest,
      stream: Writable,
      tempPath: string | undefined,
      refusal?: Refusal,
    ): void {
      const transfer: Transfer = {
        tempPath,
        stream,
        refusal,
        closed: new Promise<void>((resolve) => stream.once('close', () => resolve())),
      };
      stream.on('error', (err: Error) => {
        transfer.writeError ??= err;
        // The library awaits one 'drain' after its first write; an errored stream never emits it.
        stream.emit('drain');
      });
      this.transfers.set(request, transfer);
    }

    /** Never rejects: every outcome becomes a C-STORE response. */
    private async store(request: CStoreRequest): Promise<CStoreResponse> {
      const transfer = this.transfers.get(request);
      this.transfers.delete(request);
      if (transfer === undefined)
        return this.refuse(request, STATUS_CANNOT_UNDERSTAND, 'no data set received');
      await transfer.closed;
      const { tempPath } = transfer;
      try {
        if (transfer.refusal !== undefined || tempPath === undefined) {
          const r = transfer.refusal ?? { status: STATUS_CANNOT_UNDERSTAND, reason: 'invalid command' };
          return this.refuse(request, r.status, r.reason);
        }
        if (transfer.writeError !== undefined) {
          return this.fail(
            request,
            STATUS_OUT_OF_RESOURCES,
            'write',
            transfer.writeError,
            'cannot write to spool',
          );
        }

        let header: InstanceHeader;
        try {
          header = await readInstanceHeader(tempPath);
        } catch (err) {
          return this.refuse(request, STATUS_CANNOT_UNDERSTAND, `unparseable data set: ${errorMessage(err)}`);
        }
        const checked = checkHeader(header, request);
        if ('status' in checked) return this.refuse(request, checked.status, checked.reason);

        let size: number;
        let finalPath: string;
        try {
          size = (await stat(tempPath)).size;
          finalPath = await ctx.spool.commit(tempPath, checked, { alreadySynced: true });
        } catch (err) {
          return this.fail(request, STATUS_OUT_OF_RESOURCES, 'commit', err, 'cannot store instance');
        }

        const inst: StoredInstance = {
          ...header,
          ...checked,
          path: finalPath,
          size,
          callingAe: this.peer.callingAe,
          callingAddress: this.peer.address,
          receivedAt: new Date().toISOString(),
        };
        try {
          await ctx.onStored(inst);
        } catch (err) {
          // The file stays in the spool (a resend overwrites it; start-up reconciliation indexes it).
          return this.fail(request, STATUS_OUT_OF_RESOURCES, 'index', err, 'cannot index instance');
        }
        this.counts.stored++;
        events.instanceStored(this.peer, checked.sopClassUid, checked.transferSyntaxUid, size);
        const response = CStoreResponse.fromRequest(request);
        response.setStatus(Status.Success);
        return response;
      } finally {
        // Whatever did not make it into the spool is removed (after a commit the temp path no longer exists).
        if (tempPath !== undefined) {
          await ctx.spool.discard(tempPath).catch((err: unknown) => events.networkError(this.peer, err));
        }
      }
    }

    private refuse(request: CStoreRequest, status: number, reason: string): CStoreResponse {
      this.counts.failed++;
      events.instanceRefused(this.peer, status, reason);
      return failure(request, status, reason);
    }

    private fail(
      request: CStoreRequest,
      status: number,
      stage: string,
      err: unknown,
      comment: string,
    ): CStoreResponse {
      this.counts.failed++;
      events.storeFailed(this.peer, status, stage, err);
      return failure(request, status, comment);
    }

    private onClosed(): void {
      // An association that ended mid-transfer leaves a partial temp file: close and delete it.
      for (const [, transfer] of this.transfers) {
        transfer.stream.destroy();
        const { tempPath } = transfer;
        if (tempPath !== undefined) {
          const cleanup = transfer.closed.then(() => ctx.spool.discard(tempPath)).catch(() => undefined);
          ctx.inflight.add(cleanup);
          void cleanup.finally(() => ctx.inflight.delete(cleanup));
        }
      }
      this.transfers.clear();
      if (this.accepted) {
        events.associationClosed(this.peer, this.counts, Date.now() - this.openedAt, this.aborted);
      }
    }
  };
}

type CheckedKey = {
  studyUid: string;
  seriesUid: string;
  sopInstanceUid: string;
  sopClassUid: string;
  transferSyntaxUid: string;
};

/** The data set must carry valid UIDs that agree with the C-STORE command. */
function checkHeader(header: InstanceHeader, request: CStoreRequest): CheckedKey | Refusal {
  const { studyUid, seriesUid, sopInstanceUid, sopClassUid, transferSyntaxUid } = header;
  if (!isValidUid(studyUid))
    return { status: STATUS_CANNOT_UNDERSTAND, reason: 'invalid or missing StudyInstanceUID' };
  if (!isValidUid(seriesUid))
    return { status: STATUS_CANNOT_UNDERSTAND, reason: 'invalid or missing SeriesInstanceUID' };
  if (!isValidUid(sopInstanceUid))
    return { status: STATUS_CANNOT_UNDERSTAND, reason: 'invalid or missing SOPInstanceUID' };
  if (!isValidUid(sopClassUid))
    return { status: STATUS_CANNOT_UNDERSTAND, reason: 'invalid or missing SOPClassUID' };
  if (!isValidUid(transferSyntaxUid))
    return { status: STATUS_CANNOT_UNDERSTAND, reason: 'invalid transfer syntax' };
  if (sopInstanceUid !== trimUid(request.getAffectedSopInstanceUid())) {
    return {
      status: STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS,
      reason: 'SOPInstanceUID differs from the command',
    };
  }
  if (sopClassUid !== trimUid(request.getAffectedSopClassUid())) {
    return {
      status: STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS,
      reason: 'SOPClassUID differs from the command',
    };
  }
  return { studyUid, seriesUid, sopInstanceUid, sopClassUid, transferSyntaxUid };
}

function trimUid(value: unknown): string | undefined {
  return typeof value === 'string' ? value.replace(/[\0 ]+$/, '') : undefined;
}

function failure(request: CStoreRequest, status: number, comment: string): CStoreResponse {
  const response = CStoreResponse.fromRequest(request);
  response.setStatus(status);
  // Error Comment is LO: at most 64 characters, no backslash or control characters.
  response.setErrorComment(comment.replace(/[^\x20-\x5b\x5d-\x7e]/g, ' ').slice(0, 64));
  return response;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
