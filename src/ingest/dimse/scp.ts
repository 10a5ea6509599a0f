// One SCP instance per TCP connection: association negotiation, C-ECHO, and C-STORE streamed to the object
// store. A C-STORE is answered Success only once the instance is committed there and onStored indexed it.
import type { Socket } from 'node:net';
import { Writable } from 'node:stream';
import { TLSSocket } from 'node:tls';
import dimse from 'dcmjs-dimse';
import type { association, requests, responses } from 'dcmjs-dimse';
import { encodeFileMetaHeader, normaliseAeTitle } from '../../dicom/part10.ts';
import { IMPLICIT_VR_LITTLE_ENDIAN } from '../../dicom/transfer-syntax.ts';
import { isValidUid, newUid, trimUid } from '../../dicom/uid.ts';
import { errorMessage } from '../../observability/error-message.ts';
import { associations as associationsMetric } from '../../observability/metrics.ts';
import type { AssociationRecord } from '../../pipeline/keys.ts';
import { STATUS_CANNOT_UNDERSTAND, STATUS_OUT_OF_RESOURCES, type InstanceAcceptor } from '../accept.ts';
import type { StagedWrite } from '../../storage/object-store.ts';
import type { AssociationDecision, AssociationPolicy } from './association-policy.ts';
import * as events from './events.ts';
import { PDataReceiver } from './pdata-receiver.ts';
import { PduGuard, type PduLimits } from './pdu-guard.ts';
import {
  MPPS_ERROR_ID_NO_LONGER_UPDATABLE,
  MPPS_SOP_CLASS,
  MPPS_STATUS,
  MppsRefusal,
  readCreate,
  readSet,
  type MppsHandler,
} from './mpps.ts';
import { encodeCStoreResponsePdu } from './store-response.ts';
import { asLibraryElements, readStoreCommand } from './store-command.ts';
import { chooseTransferSyntax, isAcceptedAbstractSyntax } from './policy.ts';

const { Scp, Dataset, constants } = dimse;
/** Command Field of a C-STORE-RQ (PS3.7 E.1). */
const C_STORE_RQ = 0x0001;

/** The library's receive state this file reads (dcmjs-dimse 0.3 Network; not in its type declarations). */
interface LibraryNetwork {
  association?: Association;
  dimse?: { getCommandFieldType(): number; setDataset(dataset: unknown): void };
  dimseStream?: unknown;
  dimseStoreStream?: Writable;
  lastPduTime?: number;
  statistics?: { addBytesReceived(n: number): void };
  _processPdu(pdu: Buffer): Promise<void>;
  _performDimse(context: PresentationContext, dimse: unknown): void;
}
const { CEchoResponse, CStoreResponse, NCreateResponse, NSetResponse } = dimse.responses;
/** The library builds its pending request with no arguments and assigns the command onto it; so do we. */
const LibraryCStoreRequest = dimse.requests.CStoreRequest as unknown as new () => CStoreRequest;
const { PresentationContextResult, Status } = constants;

type Association = association.Association;
type PresentationContext = association.PresentationContext;
type CEchoRequest = requests.CEchoRequest;
type CStoreRequest = requests.CStoreRequest;
type CStoreResponse = responses.CStoreResponse;
type CEchoResponse = responses.CEchoResponse;
type NCreateRequest = requests.NCreateRequest;
type NSetRequest = requests.NSetRequest;
type NCreateResponse = responses.NCreateResponse;
type NSetResponse = responses.NSetResponse;

/** What every connection of one server shares. */
export interface ScpContext {
  maxPduLength: number;
  acceptor: InstanceAcceptor;
  policy: AssociationPolicy;
  pduLimits: PduLimits;
  maxInstanceBytes: number;
  /** ARTIM: how long a new connection may take to send its A-ASSOCIATE-RQ. */
  associationTimeoutMs: number;
  onAssociationClosed?: (record: AssociationRecord) => void;
  /** Serves Modality Performed Procedure Step (N-CREATE, N-SET) when set. */
  mpps?: MppsHandler;
  /** Stores still running, so that close() can wait for them. */
  inflight: Set<Promise<unknown>>;
  sockets: Set<Socket>;
}

interface Refusal {
  status: number;
  reason: string;
}

/** One C-STORE dataset on its way to storage. */
interface Transfer {
  /** Absent for a dataset swallowed to be refused. */
  staged: StagedWrite | undefined;
  stream: Writable;
  closed: Promise<void>;
  writeError?: Error;
  refusal?: Refusal;
}

type ScpOptions = ConstructorParameters<typeof Scp>[1];

/** store()'s outcome when the instance is durable and indexed: answered by sendSuccess. */
const SUCCESS = Symbol('success');

export function createScpClass(ctx: ScpContext): typeof Scp {
  return class GatewayScp extends Scp {
    private readonly peer = { callingAe: '', calledAe: '', address: '' };
    private readonly openedAt = Date.now();
    private readonly transfers = new Map<CStoreRequest, Transfer>();
    private readonly counts = { stored: 0, failed: 0 };
    private accepted = false;
    private aborted = false;
    private rejectedReason: string | undefined;
    private releaseSlot: (() => void) | undefined;
    private readonly artim: NodeJS.Timeout;

    private readonly socket: Socket;

    constructor(socket: Socket, opts?: ScpOptions) {
      super(socket, opts);
      this.socket = socket;
      // Without this every C-STORE response waits ~40 ms for Nagle + delayed ACK.
      socket.setNoDelay(true);
      this.peer.address = socket.remoteAddress ?? '';
      ctx.sockets.add(socket);
      this.installReceiver(socket);
      const guard = new PduGuard(ctx.pduLimits);
      // Runs before the library's own 'data' listener: a violating connection is cut before it buffers more.
      socket.prependListener('data', (chunk: Buffer) => {
        const violation = guard.check(chunk);
        if (violation === undefined || socket.destroyed) return;
        this.aborted = true;
        events.protocolViolation(this.peer, violation);
        socket.destroy();
      });
      // The library's own association timer never starts on accepted sockets (it waits for a 'connect'
      // event that only client sockets emit), so ARTIM is ours.
      this.artim = setTimeout(() => {
        events.associationRejected(this.peer, 'no A-ASSOCIATE-RQ within the association timeout');
        socket.destroy();
      }, ctx.associationTimeoutMs);
      this.on('networkError', (err: unknown) => events.networkError(this.peer, err));
      this.on('close', () => {
        clearTimeout(this.artim);
        ctx.sockets.delete(socket);
        this.onClosed();
      });
    }

    /**
     * Puts our PDU framing (pdata-receiver.ts) in place of the library's socket listener: data-set fragments
     * of a C-STORE go to the file without the library's copies; every other PDU still reaches the library,
     * whole and in order. Left as it is if the library's listener is not the one expected.
     */
    private installReceiver(socket: Socket): void {
      const listeners = socket.listeners('data') as ((chunk: Buffer) => void)[];
      const lib = this as unknown as LibraryNetwork;
      if (listeners.length !== 1 || typeof lib._processPdu !== 'function') return;
      const libraryListener = listeners[0]!;
      socket.removeListener('data', libraryListener);
      const receiver = new PDataReceiver({
        storeStream: () =>
          lib.dimse?.getCommandFieldType() === C_STORE_RQ ? lib.dimseStoreStream : undefined,
        // The first and the last data-set fragment, done as the library's _processPDataTf does them (dcmjs-dimse
        // 0.3), so that no fragment of a C-STORE data set is collected and copied by the library.
        ...(typeof lib._performDimse === 'function'
          ? {
              openStore: (pc: number) => this.openStore(lib, pc),
              finishStore: (pc: number) => this.finishStore(lib, pc),
              takeCommand: (pc: number, command: Buffer) => this.takeStoreCommand(lib, pc, command),
            }
          : {}),
        toLibrary: (pdu) => {
          lib.lastPduTime = Date.now();
          return lib._processPdu(pdu);
        },
        pduStarted: () => {
          lib.lastPduTime = Date.now();
        },
        fallback: (bytes) => libraryListener.call(socket, bytes),
        malformed: (reason) => {
          if (socket.destroyed) return;
          this.aborted = true;
          events.protocolViolation(this.peer, reason);
          socket.destroy();
        },
      });
      socket.on('data', (chunk: Buffer) => {
        if (socket.destroyed) return;
        lib.statistics?.addBytesReceived(chunk.length);
        receiver.feed(chunk);
      });
      socket.once('close', () => receiver.stop());
    }

    /** The library's step at a C-STORE's first data-set fragment: open the store stream (our hook). */
    private openStore(lib: LibraryNetwork, pc: number): Writable | undefined {
      const dimse = lib.dimse;
      if (dimse?.getCommandFieldType() !== C_STORE_RQ || lib.dimseStoreStream !== undefined) return undefined;
      let context: PresentationContext | undefined;
      try {
        context = lib.association?.getPresentationContext(pc);
      } catch {
        return undefined; // an unknown context: the library reports it as it always did
      }
      if (context === undefined) return undefined;
      lib.dimseStream = undefined;
      const stream = this.createStoreWritableStream(context, dimse as unknown as CStoreRequest);
      lib.dimseStoreStream = stream;
      return stream;
    }

    /**
     * The library's step at a C-STORE-RQ command (dcmjs-dimse 0.3 _processPDataTf: the command becomes its
     * pending request, whose data set comes next), with the command read by hand (store-command.ts). False,
     * and the library reads it itself, for any other command or state.
     */
    private takeStoreCommand(lib: LibraryNetwork, pc: number, command: Buffer): boolean {
      if (lib.dimse !== undefined || lib.dimseStream !== undefined || lib.dimseStoreStream !== undefined)
        return false;
      const elements = readStoreCommand(command);
      if (elements === undefined) return false;
      try {
        if (lib.association?.getPresentationContext(pc) === undefined) return false;
      } catch {
        return false; // an unknown context: the library reports it as it always did
      }
      // What the library builds: a Command (command data set, no data set yet) assigned onto a CStoreRequest.
      lib.dimse = Object.assign(new LibraryCStoreRequest(), {
        commandDataset: new Dataset(asLibraryElements(elements), IMPLICIT_VR_LITTLE_ENDIAN),
        dataset: undefined,
      });
      return true;
    }

    /** The library's step after a C-STORE's last data-set fragment: end the stream and dispatch the store. */
    private finishStore(lib: LibraryNetwork, pc: number): void {
      const { dimse, dimseStoreStream: stream } = lib;
      try {
        const context = lib.association!.getPresentationContext(pc);
        stream!.end();
        this.createDatasetFromStoreWritableStream(stream!, context, (dataset) => {
          dimse!.setDataset(dataset);
          lib._performDimse(context, dimse);
          lib.dimseStream = undefined;
          lib.dimseStoreStream = undefined;
          lib.dimse = undefined;
        });
      } catch (err) {
        events.networkError(this.peer, err);
      }
    }

    override associationRequested(assoc: Association): void {
      clearTimeout(this.artim);
      const calledAe = normaliseAeTitle(assoc.getCalledAeTitle());
      const callingAe = normaliseAeTitle(assoc.getCallingAeTitle());
      this.peer.calledAe = calledAe ?? '';
      this.peer.callingAe = callingAe ?? '';
      void ctx.policy
        .admit({
          calledAe,
          callingAe,
          address: this.peer.address,
          ...(this.socket instanceof TLSSocket ? { tls: tlsPeer(this.socket) } : {}),
          identity: assoc.getNegotiateUserIdentity()
            ? {
                type: assoc.getUserIdentityType(),
                primary: assoc.getUserIdentityPrimaryField() ?? '',
                secondary: assoc.getUserIdentitySecondaryField() ?? '',
                positiveResponseRequested: assoc.getUserIdentityPositiveResponseRequested(),
              }
            : undefined,
        })
        .then(
          (decision) => this.answerAssociation(assoc, decision),
          (err: unknown) => {
            // admit() does not reject; should it, the association is refused rather than left hanging.
            events.networkError(this.peer, err);
            this.socket.destroy();
          },
        );
    }

    private answerAssociation(assoc: Association, decision: AssociationDecision): void {
      // The peer went away while the limits were checked: free what was taken.
      if (this.socket.destroyed) {
        if (decision.accept) decision.release();
        return;
      }
      if (!decision.accept) {
        this.rejectedReason = decision.text;
        events.associationRejected(this.peer, decision.text);
        this.sendAssociationReject(decision.result, decision.source, decision.reason);
        return;
      }
      this.releaseSlot = decision.release;
      if (decision.confirmIdentity) {
        // Username / passcode identities get an empty server response (PS3.7 D.3.3.7.2).
        assoc.setNegotiateUserIdentityServerResponse(true);
        assoc.setUserIdentityServerResponse('');
      }

      let accepted = 0;
      let rejected = 0;
      for (const { context } of assoc.getPresentationContexts()) {
        if (!isAcceptedAbstractSyntax(context.getAbstractSyntaxUid(), { mpps: ctx.mpps !== undefined })) {
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
      // Our A-ASSOCIATE-AC carries what WE can receive: big PDUs from the sender mean fewer round trips.
      // (The sender's own limit only bounds our responses, which are a few hundred bytes.)
      const maxPdu = ctx.maxPduLength;
      assoc.setMaxPduLength(maxPdu);
      this.accepted = true;
      events.associationAccepted(this.peer, accepted, rejected, maxPdu, decision.username);
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

    override nCreateRequest(request: NCreateRequest, callback: (response: NCreateResponse) => void): void {
      this.answer(callback, this.mppsCreate(request));
    }

    override nSetRequest(request: NSetRequest, callback: (response: NSetResponse) => void): void {
      this.answer(callback, this.mppsSet(request));
    }

    /** N-CREATE of a Modality Performed Procedure Step. Never rejects: every outcome is a status. */
    private async mppsCreate(request: NCreateRequest): Promise<NCreateResponse> {
      const response = NCreateResponse.fromRequest(request);
      const handler = ctx.mpps;
      // The library answers requests on any accepted context: only MPPS takes N-CREATE here.
      if (handler === undefined || request.getAffectedSopClassUid() !== MPPS_SOP_CLASS)
        return mppsStatus(response, MPPS_STATUS_NO_SUCH_SOP_CLASS, 'SOP class not served with N-CREATE');
      // PS3.7 10.1.5: the SCU may leave the UID to the SCP; it is returned in the response.
      const given = trimUid(request.getAffectedSopInstanceUid());
      let uid: string;
      if (given === undefined || given === '') {
        uid = newUid();
        response.setAffectedSopInstanceUid(uid);
      } else if (isValidUid(given)) uid = given;
      else
        return this.mppsFailure(
          response,
          'N-CREATE',
          String(given),
          new MppsRefusal(MPPS_STATUS.invalidObjectInstance, 'invalid SOP Instance UID'),
        );
      try {
        const step = readCreate(request.getDataset()?.getElements() ?? {}, this.peer.callingAe);
        const outcome = await handler.create(uid, step);
        if (!outcome.ok) return this.mppsFailure(response, 'N-CREATE', uid, duplicate());
        events.mppsReceived(this.peer, 'N-CREATE', uid, step.state);
        return mppsStatus(response, MPPS_STATUS.success);
      } catch (err) {
        return this.mppsFailure(response, 'N-CREATE', uid, err);
      }
    }

    /** N-SET of a Modality Performed Procedure Step. Never rejects: every outcome is a status. */
    private async mppsSet(request: NSetRequest): Promise<NSetResponse> {
      const response = NSetResponse.fromRequest(request);
      const handler = ctx.mpps;
      if (handler === undefined || request.getRequestedSopClassUid() !== MPPS_SOP_CLASS)
        return mppsStatus(response, MPPS_STATUS_NO_SUCH_SOP_CLASS, 'SOP class not served with N-SET');
      const uid = trimUid(request.getRequestedSopInstanceUid());
      if (!isValidUid(uid)) return this.mppsFailure(response, 'N-SET', String(uid), noSuchStep());
      try {
        const update = readSet(request.getDataset()?.getElements() ?? {});
        const outcome = await handler.set(uid, update);
        if (!outcome.ok) {
          if (outcome.why === 'no-such-instance')
            return this.mppsFailure(response, 'N-SET', uid, noSuchStep());
          const r = this.mppsFailure(response, 'N-SET', uid, noLongerUpdatable());
          setErrorId(r, MPPS_ERROR_ID_NO_LONGER_UPDATABLE);
          return r;
        }
        events.mppsReceived(this.peer, 'N-SET', uid, outcome.state);
        return mppsStatus(response, MPPS_STATUS.success);
      } catch (err) {
        return this.mppsFailure(response, 'N-SET', uid, err);
      }
    }

    private mppsFailure<R extends NCreateResponse | NSetResponse>(
      response: R,
      operation: string,
      uid: string,
      err: unknown,
    ): R {
      if (err instanceof MppsRefusal) {
        events.mppsRefused(this.peer, operation, uid, err.status, err.message);
        return mppsStatus(response, err.status, err.message);
      }
      // Redis down or the like: a processing failure the modality may retry.
      events.mppsFailed(this.peer, operation, uid, err);
      return mppsStatus(response, MPPS_STATUS.processingFailure, 'cannot record the step');
    }

    private answer<R>(callback: (response: R) => void, work: Promise<R>): void {
      const done = work.then((response) => {
        try {
          callback(response);
        } catch (err) {
          events.networkError(this.peer, err);
        }
      });
      ctx.inflight.add(done);
      void done.finally(() => ctx.inflight.delete(done));
    }

    /** Called by the library at the first dataset fragment; every fragment is then written to the result. */
    override createStoreWritableStream(context: PresentationContext, request: CStoreRequest): Writable {
      const refuseInto = (refusal: Refusal): Writable => {
        // Swallow the dataset without touching the disk, refuse it once it has arrived.
        const sink = new Writable({ write: (_chunk, _enc, done) => done() });
        this.track(request, sink, undefined, refusal);
        return sink;
      };
      if (ctx.acceptor.disk.isBelow()) {
        return refuseInto({
          status: STATUS_OUT_OF_RESOURCES,
          reason: 'spool disk below free-space watermark',
        });
      }
      let meta: Buffer;
      try {
        meta = encodeFileMetaHeader({
          sopClassUid: request.getAffectedSopClassUid(),
          sopInstanceUid: request.getAffectedSopInstanceUid(),
          transferSyntaxUid: context.getAcceptedTransferSyntaxUid() ?? '',
          sourceAeTitle: this.peer.callingAe,
        });
      } catch (err) {
        return refuseInto({ status: STATUS_CANNOT_UNDERSTAND, reason: errorMessage(err) });
      }
      const staged = ctx.acceptor.store.stage(ctx.maxInstanceBytes + meta.length, {
        pause: () => this.socket.pause(),
        resume: () => this.socket.resume(),
      });
      this.track(request, staged.stream, staged);
      staged.stream.write(meta);
      return staged.stream;
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
          if (response === SUCCESS) this.sendSuccess(request, callback);
          else callback(response);
        } catch (err) {
          events.networkError(this.peer, err);
        }
      });
      ctx.inflight.add(work);
      void work.finally(() => ctx.inflight.delete(work));
    }

    /** Success, hand-encoded straight onto the socket; through the library if the context is unknown. */
    private sendSuccess(request: CStoreRequest, callback: (response: CStoreResponse) => void): void {
      const assoc = (this as unknown as { association?: Association }).association;
      const context = assoc?.getAcceptedPresentationContextFromRequest(request);
      if (context === undefined) {
        const response = CStoreResponse.fromRequest(request);
        response.setStatus(Status.Success);
        callback(response);
        return;
      }
      if (this.socket.destroyed) return;
      this.socket.write(
        encodeCStoreResponsePdu({
          presentationContextId: context.getPresentationContextId(),
          messageId: request.getMessageId(),
          sopClassUid: request.getAffectedSopClassUid(),
          sopInstanceUid: request.getAffectedSopInstanceUid(),
          status: Status.Success,
        }),
      );
    }

    private track(
      request: CStoreRequest,
      stream: Writable,
      staged: StagedWrite | undefined,
      refusal?: Refusal,
    ): void {
      const transfer: Transfer = {
        staged,
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
    private async store(request: CStoreRequest): Promise<CStoreResponse | typeof SUCCESS> {
      const transfer = this.transfers.get(request);
      this.transfers.delete(request);
      if (transfer === undefined)
        return this.refuse(request, STATUS_CANNOT_UNDERSTAND, 'no data set received');
      // The header is read while the file's last write and fdatasync run (the stream was just ended).
      const early =
        transfer.refusal === undefined && transfer.staged !== undefined
          ? ctx.acceptor.readHeaderEarly(transfer.staged)
          : undefined;
      await transfer.closed;
      const { staged, writeError } = transfer;
      if (transfer.refusal !== undefined || staged === undefined) {
        const r = transfer.refusal ?? { status: STATUS_CANNOT_UNDERSTAND, reason: 'invalid command' };
        return this.refuse(request, r.status, r.reason);
      }
      if (writeError !== undefined) {
        const r = await ctx.acceptor.writeFailed(staged, writeError);
        return r.kind === 'refused'
          ? this.refuse(request, r.status, r.reason)
          : this.fail(request, r.status, 'write', r.error, r.reason);
      }
      const outcome = await ctx.acceptor.accept(
        staged,
        { path: 'dimse', callingAe: this.peer.callingAe, address: this.peer.address },
        {
          sopInstanceUid: request.getAffectedSopInstanceUid(),
          sopClassUid: request.getAffectedSopClassUid(),
        },
        early,
      );
      if (!outcome.ok) {
        return outcome.kind === 'refused'
          ? this.refuse(request, outcome.status, outcome.reason)
          : this.fail(request, outcome.status, 'store', outcome.error, outcome.reason);
      }
      const { instance } = outcome;
      this.counts.stored++;
      events.instanceStored(this.peer, instance.sopClassUid, instance.transferSyntaxUid, instance.size);
      return SUCCESS;
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
      // An association that ended mid-transfer leaves a partial staged write: close and discard it.
      for (const [, transfer] of this.transfers) {
        transfer.stream.destroy();
        const { staged } = transfer;
        if (staged !== undefined) {
          const cleanup = transfer.closed.then(() => staged.discard()).catch(() => undefined);
          ctx.inflight.add(cleanup);
          void cleanup.finally(() => ctx.inflight.delete(cleanup));
        }
      }
      this.transfers.clear();
      this.releaseSlot?.();
      this.releaseSlot = undefined;
      const durationMs = Date.now() - this.openedAt;
      if (this.accepted) events.associationClosed(this.peer, this.counts, durationMs, this.aborted);
      // A bare TCP connection that never asked for an association (port scan, health probe) is not recorded.
      if (!this.accepted && this.rejectedReason === undefined) return;
      const result = this.rejectedReason !== undefined ? 'rejected' : this.aborted ? 'aborted' : 'accepted';
      associationsMetric.inc({ result });
      const record: AssociationRecord = {
        callingAe: this.peer.callingAe,
        calledAe: this.peer.calledAe,
        address: this.peer.address,
        startedAt: this.openedAt,
        durationMs,
        stored: this.counts.stored,
        failed: this.counts.failed,
        result,
        ...(this.rejectedReason !== undefined ? { reason: this.rejectedReason } : {}),
      };
      try {
        ctx.onAssociationClosed?.(record);
      } catch (err) {
        events.networkError(this.peer, err);
      }
    }
  };
}

function failure(request: CStoreRequest, status: number, comment: string): CStoreResponse {
  const response = CStoreResponse.fromRequest(request);
  response.setStatus(status);
  // Error Comment is LO: at most 64 characters, no backslash or control characters.
  response.setErrorComment(comment.replace(/[^\x20-\x5b\x5d-\x7e]/g, ' ').slice(0, 64));
  return response;
}

const duplicate = () => new MppsRefusal(MPPS_STATUS.duplicateSopInstance, 'the step exists already');
const noSuchStep = () => new MppsRefusal(MPPS_STATUS.noSuchSopInstance, 'no such step');
const noLongerUpdatable = () =>
  new MppsRefusal(MPPS_STATUS.processingFailure, 'Performed Procedure Step Object may no longer be updated');

/** 0118H No such SOP Class (PS3.7 C.5.9). */
const MPPS_STATUS_NO_SUCH_SOP_CLASS = 0x0118;

function mppsStatus<R extends NCreateResponse | NSetResponse>(
  response: R,
  status: number,
  comment?: string,
): R {
  response.setStatus(status);
  if (comment !== undefined) response.setErrorComment(comment.slice(0, 64));
  return response;
}

/** Error ID (0000,0903), US: the library declares no setter for it. */
function setErrorId(response: NSetResponse, id: number): void {
  (response.getCommandDataset() as unknown as { setElement(tag: string, value: unknown): void }).setElement(
    'ErrorID',
    id,
  );
}

/** Whether the TLS peer's certificate was verified, and its subject CN (only a single, plain CN counts). */
function tlsPeer(socket: TLSSocket): { authorized: boolean; subjectCN?: string } {
  const cn = socket.getPeerCertificate()?.subject?.CN as unknown;
  return { authorized: socket.authorized, ...(typeof cn === 'string' ? { subjectCN: cn } : {}) };
}
