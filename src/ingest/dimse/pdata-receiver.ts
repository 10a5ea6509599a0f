// The receive side of an association, ahead of dcmjs-dimse. The library collects every PDU into one buffer
// (Buffer.concat of the socket chunks), parses it into PDV objects and copies each PDV's value before it
// writes it to the C-STORE stream: for a data set that is three copies of every byte and the garbage they
// make, the largest share of the gateway's CPU time while it receives.
//
// This receiver frames PDUs itself, straight off the socket chunks. One case only takes a fast path: a
// P-DATA-TF PDV that is a data-set fragment of a C-STORE the library has read the command of. Its value is
// written to that C-STORE's stream as views of the socket chunks: no copy. At the first fragment the host
// opens the stream as the library would (host.openStore: the library's createStoreWritableStream hook),
// and after the last one it ends it as the library would (host.finishStore: end the stream, make the
// data set, dispatch the C-STORE). Everything else (association PDUs, commands, any non-C-STORE data set,
// and every fragment when the host offers no openStore) is handed to the library as the whole PDU it would
// have collected itself, one PDU at a time and in order (each handed PDU is awaited before the next byte
// is looked at). One more case is offered to the host before the library: a P-DATA-TF PDU that is one
// whole command PDV (host.takeCommand; a C-STORE-RQ's command, read by hand: store-command.ts). Inside one
// PDU, once a PDV has gone the slow way, the rest of that PDU goes with it, so the library sees the PDVs in
// order.
// An unknown PDU type hands this and every later byte to the library's own accumulator (host.fallback),
// which reports it as it always did. Malformed PDV framing is also the PDU guard's to catch (it runs first
// and cuts the connection); the receiver stops at it too.

/** Where a C-STORE's data set goes: the library's store stream (a Writable). */
export interface StoreSink {
  write(chunk: Buffer): boolean;
  /** Held while a data set's pieces are written, so that they reach the file together (one writev). */
  cork?(): void;
  uncork?(): void;
  /** A write said the stream is full and it has not drained since (Writable's writableNeedDrain). */
  readonly writableNeedDrain?: boolean;
}

/** What the receiver needs from the association it serves. */
export interface PDataHost {
  /** The open data-set stream of the C-STORE being received, if there is one. */
  storeStream(): StoreSink | undefined;
  /**
   * At the first data-set fragment of a C-STORE: opens its store stream as the library would and returns it;
   * undefined when the library must see this fragment itself (no C-STORE pending, unknown context...).
   */
  openStore?(presentationContextId: number): StoreSink | undefined;
  /** After the last data-set fragment of a C-STORE went to its stream: ends it as the library would. */
  finishStore?(presentationContextId: number): void;
  /**
   * A P-DATA-TF PDU that holds one PDV, a whole command (its last fragment): the host may take it instead of
   * the library (true). The value is a view of the socket's bytes, valid during the call only.
   */
  takeCommand?(presentationContextId: number, command: Buffer): boolean;
  /** Hands one whole PDU to the library; the receiver waits for the returned promise before going on. */
  toLibrary(pdu: Buffer): Promise<void> | void;
  /** From now on the library's own accumulator gets the bytes, starting with these. */
  fallback(bytes: Buffer): void;
  /** Every PDU's start, fast or not (the library's idle timer counts from the last PDU it saw). */
  pduStarted?(): void;
  /** Framing that cannot be right (the PDU guard normally cuts the connection first). */
  malformed(reason: string): void;
}

/**
 * A C-STORE data set's fragments are held (corked) in its stream until its last fragment or this many bytes,
 * then reach the file in one writev: one write for a typical image instead of one per PDU, while memory per
 * association stays bounded (the held pieces are views of socket chunks, no copies).
 */
export const CORK_BYTES = 1024 * 1024;

const PDU_HEADER = 6;
const PDV_HEADER = 6;
const P_DATA_TF = 0x04;
/** A-ASSOCIATE-RQ/AC/RJ, P-DATA-TF, A-RELEASE-RQ/RP, A-ABORT: the types the library reads. */
const KNOWN_PDU_TYPES = new Set([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07]);

type Mode = 'pdu-header' | 'whole' | 'pdv-header' | 'pdv-value' | 'fallback' | 'stopped';

export class PDataReceiver {
  private readonly queue: Buffer[] = [];
  private pos = 0;
  private running = false;
  private mode: Mode = 'pdu-header';

  private header = Buffer.alloc(PDU_HEADER);
  private headerLength = 0;
  /** Bytes of the current PDU's body not yet read. */
  private pduRemaining = 0;
  /** Parts of a PDU going whole to the library (its header first). */
  private parts: Buffer[] = [];
  private partsLength = 0;

  private pdvHeader = Buffer.alloc(PDV_HEADER);
  private pdvHeaderLength = 0;
  /** Bytes of the current PDV value not yet read. */
  private pdvRemaining = 0;
  /** Where the current PDV's value goes: straight to the store stream, or into the slow PDU. */
  private fastStream: StoreSink | undefined;
  /** The presentation context of the current fast PDV when it is the last fragment of its data set. */
  private finishPc: number | undefined;
  /** The stream holding corked pieces, and how many bytes it holds. */
  private corked: StoreSink | undefined;
  private corkedBytes = 0;
  /** Whether some PDV of the current P-DATA-TF PDU goes to the library (then all later ones of it do). */
  private slowInPdu = false;
  /** PDVs of the current P-DATA-TF PDU so far, and the context of its first when that is a whole command. */
  private pdvsInPdu = 0;
  private wholeCommandPc: number | undefined;

  /** PDVs (in bytes) that took the fast path and the slow path, for tests and the profile. */
  readonly counts = { fastPdvs: 0, slowPdus: 0, hostCommands: 0 };

  constructor(private readonly host: PDataHost) {}

  /** Every received chunk, in order. */
  feed(chunk: Buffer): void {
    if (this.mode === 'stopped') return;
    if (this.mode === 'fallback' && !this.running) {
      this.host.fallback(chunk);
      return;
    }
    this.queue.push(chunk);
    if (!this.running) void this.pump();
  }

  /** Stops reading (the connection is closing). */
  stop(): void {
    this.mode = 'stopped';
    this.queue.length = 0;
  }

  private async pump(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length > 0) {
        const chunk = this.queue[0]!;
        while (this.pos < chunk.length) {
          if (this.mode === 'stopped') return;
          if (this.mode === 'fallback') {
            this.host.fallback(this.pos === 0 ? chunk : chunk.subarray(this.pos));
            this.pos = chunk.length;
            break;
          }
          const pending = this.step(chunk);
          if (pending !== undefined) await pending;
        }
        this.queue.shift();
        this.pos = 0;
      }
    } catch (err) {
      this.mode = 'stopped';
      this.queue.length = 0;
      this.host.malformed(err instanceof Error ? err.message : String(err));
    } finally {
      this.running = false;
    }
  }

  /** Reads from chunk at this.pos; returns the library's promise when a whole PDU was handed to it. */
  private step(chunk: Buffer): Promise<void> | void {
    switch (this.mode) {
      case 'pdu-header':
        return this.readPduHeader(chunk);
      case 'whole': {
        const take = Math.min(this.pduRemaining, chunk.length - this.pos);
        this.addPart(chunk.subarray(this.pos, this.pos + take));
        this.pos += take;
        this.pduRemaining -= take;
        return this.pduRemaining === 0 ? this.flushWhole() : undefined;
      }
      case 'pdv-header':
        return this.readPdvHeader(chunk);
      case 'pdv-value':
        return this.readPdvValue(chunk);
      default:
        this.pos = chunk.length;
        return undefined;
    }
  }

  private readPduHeader(chunk: Buffer): Promise<void> | void {
    const take = Math.min(PDU_HEADER - this.headerLength, chunk.length - this.pos);
    chunk.copy(this.header, this.headerLength, this.pos, this.pos + take);
    this.headerLength += take;
    this.pos += take;
    if (this.headerLength < PDU_HEADER) return undefined;
    this.headerLength = 0;
    this.host.pduStarted?.();
    const type = this.header[0]!;
    const length = this.header.readUInt32BE(2);
    if (!KNOWN_PDU_TYPES.has(type)) {
      // The library's accumulator reports it; hand it the header it has not seen, then the rest.
      this.mode = 'fallback';
      this.host.fallback(Buffer.from(this.header));
      return undefined;
    }
    this.pduRemaining = length;
    this.parts = [];
    this.partsLength = 0;
    if (type !== P_DATA_TF) {
      this.addPart(Buffer.from(this.header));
      this.mode = 'whole';
      return length === 0 ? this.flushWhole() : undefined;
    }
    this.slowInPdu = false;
    this.pdvsInPdu = 0;
    this.wholeCommandPc = undefined;
    this.mode = 'pdv-header';
    return length === 0 ? this.endPData() : undefined;
  }

  private readPdvHeader(chunk: Buffer): Promise<void> | void {
    const take = Math.min(PDV_HEADER - this.pdvHeaderLength, chunk.length - this.pos, this.pduRemaining);
    chunk.copy(this.pdvHeader, this.pdvHeaderLength, this.pos, this.pos + take);
    this.pdvHeaderLength += take;
    this.pos += take;
    this.pduRemaining -= take;
    if (this.pdvHeaderLength < PDV_HEADER) {
      if (this.pduRemaining === 0) throw new Error('PDV header runs past the end of its PDU');
      return undefined;
    }
    this.pdvHeaderLength = 0;
    const itemLength = this.pdvHeader.readUInt32BE(0);
    if (itemLength < 2) throw new Error(`PDV item length ${itemLength} is too short`);
    this.pdvRemaining = itemLength - 2;
    if (this.pdvRemaining > this.pduRemaining) throw new Error('PDV runs past the end of its PDU');
    const pc = this.pdvHeader[4]!;
    const control = this.pdvHeader[5]!;
    // Bit 0 of the message control header: 1 command, 0 data set; bit 1: the last fragment.
    const dataSet = (control & 0x01) === 0;
    const last = (control & 0x02) !== 0;
    this.pdvsInPdu++;
    this.wholeCommandPc = !dataSet && last && this.pdvsInPdu === 1 ? pc : undefined;
    let stream: StoreSink | undefined;
    if (!this.slowInPdu && dataSet) {
      stream = this.host.storeStream();
      if (stream === undefined && this.host.openStore !== undefined) stream = this.host.openStore(pc);
      // Without finishStore the library must see the last fragment to finish the store.
      if (last && this.host.finishStore === undefined) stream = undefined;
    }
    if (stream !== undefined) {
      this.fastStream = stream;
      this.finishPc = last ? pc : undefined;
      this.counts.fastPdvs++;
    } else {
      // Whatever the library does next (write the last fragment, end the stream) follows what is held.
      this.uncork();
      this.fastStream = undefined;
      this.slowInPdu = true;
      this.addPart(Buffer.from(this.pdvHeader));
    }
    this.mode = 'pdv-value';
    return this.pdvRemaining === 0 ? this.endPdv() : undefined;
  }

  private readPdvValue(chunk: Buffer): Promise<void> | void {
    const take = Math.min(this.pdvRemaining, chunk.length - this.pos);
    const piece = chunk.subarray(this.pos, this.pos + take);
    const stream = this.fastStream;
    if (stream !== undefined) {
      // A full stream pauses the socket until it drains, and a corked stream never drains: so a stream is
      // corked only right before a write and only while it is not waiting to drain, and let go as soon as a
      // write says it is full. It is never left corked while the socket waits for it.
      if (this.corked !== stream) {
        this.uncork();
        if (stream.writableNeedDrain !== true) {
          stream.cork?.();
          this.corked = stream;
        }
      }
      this.corkedBytes += take;
      if (!stream.write(piece)) this.uncork();
    } else this.addPart(piece);
    this.pos += take;
    this.pdvRemaining -= take;
    this.pduRemaining -= take;
    return this.pdvRemaining === 0 ? this.endPdv() : undefined;
  }

  private endPdv(): Promise<void> | void {
    const stream = this.fastStream;
    this.fastStream = undefined;
    if (stream !== undefined) {
      const pc = this.finishPc;
      this.finishPc = undefined;
      if (pc !== undefined || this.corkedBytes >= CORK_BYTES) this.uncork();
      if (pc !== undefined) this.host.finishStore!(pc);
    }
    this.mode = 'pdv-header';
    return this.pduRemaining === 0 ? this.endPData() : undefined;
  }

  /** Lets the corked pieces go to the file. */
  private uncork(): void {
    this.corked?.uncork?.();
    this.corked = undefined;
    this.corkedBytes = 0;
  }

  /** End of a P-DATA-TF PDU: the PDVs that went the slow way go to the library as one PDU of their own. */
  private endPData(): Promise<void> | void {
    this.mode = 'pdu-header';
    if (!this.slowInPdu) return undefined;
    if (this.takenByHost()) {
      this.parts = [];
      this.partsLength = 0;
      this.counts.hostCommands++;
      return undefined;
    }
    const header = Buffer.alloc(PDU_HEADER);
    header[0] = P_DATA_TF;
    header.writeUInt32BE(this.partsLength, 2);
    const pdu = Buffer.concat([header, ...this.parts], PDU_HEADER + this.partsLength);
    this.parts = [];
    this.partsLength = 0;
    this.counts.slowPdus++;
    return this.host.toLibrary(pdu);
  }

  /** A PDU that is one whole command PDV, offered to the host (parts: the PDV header, then its value). */
  private takenByHost(): boolean {
    const pc = this.wholeCommandPc;
    // wholeCommandPc is cleared by any later PDV of the PDU: set, it is the PDU's only one.
    if (pc === undefined || this.host.takeCommand === undefined) return false;
    const value = this.parts.length === 2 ? this.parts[1]! : Buffer.concat(this.parts.slice(1));
    return this.host.takeCommand(pc, value);
  }

  private flushWhole(): Promise<void> | void {
    this.mode = 'pdu-header';
    const pdu = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.partsLength);
    this.parts = [];
    this.partsLength = 0;
    this.counts.slowPdus++;
    return this.host.toLibrary(pdu);
  }

  private addPart(part: Buffer): void {
    this.parts.push(part);
    this.partsLength += part.length;
  }
}
