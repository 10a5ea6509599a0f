// A C-STORE-RSP with status Success, encoded by hand: the library's path (a dcmjs command data set written
// through 256 KiB buffers) costs more per instance than the rest of the response path together.
// PS3.7 E.1 / 9.3.1.2 (command set, implicit VR little endian), PS3.8 9.3.5 (P-DATA-TF, one PDV).

const C_STORE_RSP = 0x8001;
const NO_DATA_SET = 0x0101;

/** A UID value padded to even length with a NUL (PS3.5 6.2, UI). */
function uidValue(uid: string): Buffer {
  const bytes = Buffer.from(uid, 'latin1');
  return bytes.length % 2 === 0 ? bytes : Buffer.concat([bytes, Buffer.alloc(1)]);
}

function element(tag: number, value: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt16LE(0x0000, 0);
  head.writeUInt16LE(tag, 2);
  head.writeUInt32LE(value.length, 4);
  return Buffer.concat([head, value]);
}

function us(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n, 0);
  return b;
}

/** The whole P-DATA-TF PDU carrying the C-STORE-RSP command (no data set) for one request. */
export function encodeCStoreResponsePdu(opts: {
  presentationContextId: number;
  messageId: number;
  sopClassUid: string;
  sopInstanceUid: string;
  status: number;
}): Buffer {
  const body = Buffer.concat([
    element(0x0002, uidValue(opts.sopClassUid)),
    element(0x0100, us(C_STORE_RSP)),
    element(0x0120, us(opts.messageId)),
    element(0x0800, us(NO_DATA_SET)),
    element(0x0900, us(opts.status)),
    element(0x1000, uidValue(opts.sopInstanceUid)),
  ]);
  const groupLength = Buffer.alloc(4);
  groupLength.writeUInt32LE(body.length, 0);
  const command = Buffer.concat([element(0x0000, groupLength), body]);
  const pdu = Buffer.alloc(6 + 4 + 2 + command.length);
  pdu.writeUInt8(0x04, 0); // P-DATA-TF
  pdu.writeUInt32BE(4 + 2 + command.length, 2);
  pdu.writeUInt32BE(2 + command.length, 6); // PDV item length
  pdu.writeUInt8(opts.presentationContextId, 10);
  pdu.writeUInt8(0x03, 11); // message control header: command, last fragment
  command.copy(pdu, 12);
  return pdu;
}
