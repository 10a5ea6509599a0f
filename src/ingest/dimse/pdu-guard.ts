// Bounds what one connection can make us buffer, before dcmjs-dimse sees a byte. The library accumulates a
// whole PDU (and a whole DIMSE command) in memory whatever length the peer declares, so a hostile peer
// announcing a 4 GiB PDU, or a command that never ends, could exhaust memory. This watcher reads only the
// PDU and PDV headers as the bytes stream past and reports the first violation.

export interface PduLimits {
  /** Largest P-DATA-TF PDU accepted (we advertise maxPduLength; a little slack for senders that miscount). */
  maxPDataLength: number;
  /** Largest A-ASSOCIATE-RQ (presentation contexts × transfer syntaxes; real ones stay far below). */
  maxAssociateLength: number;
  /** Largest DIMSE command, across its fragments. */
  maxCommandBytes: number;
}

export const DEFAULT_ASSOCIATE_LIMIT = 1024 * 1024;
export const DEFAULT_COMMAND_LIMIT = 64 * 1024;
const SMALL_PDU_LIMIT = 1024;
const PDU_HEADER = 6;
const PDV_HEADER = 6;
const P_DATA_TF = 0x04;
const A_ASSOCIATE_RQ = 0x01;

/** Feed it every received chunk, in order; returns a violation message, or undefined while all is well. */
export class PduGuard {
  private header = Buffer.alloc(0);
  private pduType = 0;
  /** Bytes of the current PDU body not yet seen. */
  private pduRemaining = 0;
  private pdvHeader = Buffer.alloc(0);
  /** Bytes of the current PDV value not yet seen. */
  private pdvRemaining = 0;
  private commandBytes = 0;
  private violation: string | undefined;

  constructor(private readonly limits: PduLimits) {}

  check(chunk: Buffer): string | undefined {
    let pos = 0;
    while (pos < chunk.length && this.violation === undefined) {
      if (this.pduRemaining === 0) {
        pos = this.readPduHeader(chunk, pos);
        continue;
      }
      const take = Math.min(this.pduRemaining, chunk.length - pos);
      if (this.pduType === P_DATA_TF) this.readPdvs(chunk.subarray(pos, pos + take));
      this.pduRemaining -= take;
      pos += take;
      const pdvOpen = this.pdvRemaining + this.pdvHeader.length > 0;
      if (this.pduRemaining === 0 && this.pduType === P_DATA_TF && pdvOpen) {
        this.violation ??= 'PDV runs past the end of its PDU';
      }
    }
    return this.violation;
  }

  private readPduHeader(chunk: Buffer, pos: number): number {
    const take = Math.min(PDU_HEADER - this.header.length, chunk.length - pos);
    this.header = Buffer.concat([this.header, chunk.subarray(pos, pos + take)]);
    if (this.header.length < PDU_HEADER) return pos + take;
    this.pduType = this.header.readUInt8(0);
    const length = this.header.readUInt32BE(2);
    this.header = Buffer.alloc(0);
    const limit =
      this.pduType === P_DATA_TF
        ? this.limits.maxPDataLength
        : this.pduType === A_ASSOCIATE_RQ
          ? this.limits.maxAssociateLength
          : SMALL_PDU_LIMIT;
    if (length > limit) this.violation = `PDU type ${this.pduType} of ${length} bytes exceeds ${limit}`;
    this.pduRemaining = length;
    return pos + take;
  }

  /** PDV items inside a P-DATA-TF body: 4-byte length, context id, message control header, value. */
  private readPdvs(body: Buffer): void {
    let pos = 0;
    while (pos < body.length && this.violation === undefined) {
      if (this.pdvRemaining > 0) {
        const take = Math.min(this.pdvRemaining, body.length - pos);
        this.pdvRemaining -= take;
        pos += take;
        continue;
      }
      const take = Math.min(PDV_HEADER - this.pdvHeader.length, body.length - pos);
      this.pdvHeader = Buffer.concat([this.pdvHeader, body.subarray(pos, pos + take)]);
      pos += take;
      if (this.pdvHeader.length < PDV_HEADER) continue;
      const itemLength = this.pdvHeader.readUInt32BE(0);
      const control = this.pdvHeader.readUInt8(5);
      this.pdvHeader = Buffer.alloc(0);
      if (itemLength < 2) {
        this.violation = `PDV item length ${itemLength} is too short`;
        return;
      }
      this.pdvRemaining = itemLength - 2;
      if ((control & 0x01) === 0) continue; // data set fragment: streamed to disk, not buffered
      this.commandBytes += this.pdvRemaining;
      if (this.commandBytes > this.limits.maxCommandBytes) {
        this.violation = `DIMSE command larger than ${this.limits.maxCommandBytes} bytes`;
      }
      if ((control & 0x02) !== 0) this.commandBytes = 0; // last fragment of this command
    }
  }
}
