// Pure pieces of the ingest front doors: the streaming multipart reader, the PDU guard, the association
// policy bookkeeping, and the sequence-depth walk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dimse from 'dcmjs-dimse';
import {
  checkSequenceDepth,
  encodeFileMetaHeader,
  MAX_SEQUENCE_DEPTH,
  Part10Error,
} from '../../../src/dicom/part10.ts';
import { AssociationPolicy } from '../../../src/ingest/dimse/association-policy.ts';
import { PduGuard } from '../../../src/ingest/dimse/pdu-guard.ts';
import { MultipartError, boundaryOf, readMultipart } from '../../../src/ingest/stowrs/multipart.ts';

async function* chunked(buf: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

async function collect(buf: Buffer, size: number, boundary: string) {
  const parts: { headers: Record<string, string>; body: Buffer }[] = [];
  for await (const p of readMultipart(chunked(buf, size), boundary)) {
    const chunks: Buffer[] = [];
    for await (const c of p.body) chunks.push(c);
    parts.push({ headers: p.headers, body: Buffer.concat(chunks) });
  }
  return parts;
}

test('multipart: the same parts whatever the chunking, even when a body contains boundary-like bytes', async () => {
  const b = 'xYz-boundary';
  const tricky = Buffer.from(`\r\n--xYz-boundar not quite\r\n--xYz`);
  const body = Buffer.concat([
    Buffer.from(`--${b}\r\nContent-Type: application/dicom\r\n\r\n`),
    tricky,
    Buffer.from(`\r\n--${b}\r\nContent-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1\r\n\r\n`),
    Buffer.alloc(5000, 7),
    Buffer.from(`\r\n--${b}--\r\nepilogue`),
  ]);
  for (const size of [1, 2, 7, 13, 64, 4096, body.length]) {
    const parts = await collect(body, size, b);
    assert.equal(parts.length, 2, `chunk size ${size}`);
    assert.deepEqual(parts[0]!.body, tricky);
    assert.deepEqual(parts[1]!.body, Buffer.alloc(5000, 7));
    assert.equal(parts[1]!.headers['content-type'], 'application/dicom; transfer-syntax=1.2.840.10008.1.2.1');
  }
  assert.equal(boundaryOf('multipart/related; type="application/dicom"; boundary="a b"'), 'a b');
  assert.equal(boundaryOf('multipart/related; boundary=abc; type=x'), 'abc');
  await assert.rejects(collect(Buffer.from('no boundary'), 4, b), MultipartError);
  await assert.rejects(collect(body.subarray(0, 80), 16, b), MultipartError);
});

function pdu(type: number, body: Buffer): Buffer {
  const head = Buffer.alloc(6);
  head.writeUInt8(type, 0);
  head.writeUInt32BE(body.length, 2);
  return Buffer.concat([head, body]);
}

function pdv(command: boolean, last: boolean, value: Buffer): Buffer {
  const head = Buffer.alloc(6);
  head.writeUInt32BE(value.length + 2, 0);
  head.writeUInt8(1, 4);
  head.writeUInt8((command ? 1 : 0) | (last ? 2 : 0), 5);
  return Buffer.concat([head, value]);
}

test('PDU guard: normal traffic passes byte by byte; oversized PDUs and endless commands are caught', () => {
  const limits = { maxPDataLength: 20_000, maxAssociateLength: 1000, maxCommandBytes: 300 };
  const normal = Buffer.concat([
    pdu(1, Buffer.alloc(500)),
    pdu(4, Buffer.concat([pdv(true, true, Buffer.alloc(200)), pdv(false, false, Buffer.alloc(9000))])),
    pdu(4, pdv(false, true, Buffer.alloc(19_000))),
    pdu(5, Buffer.alloc(4)),
  ]);
  const guard = new PduGuard(limits);
  for (let i = 0; i < normal.length; i++) assert.equal(guard.check(normal.subarray(i, i + 1)), undefined);

  assert.match(new PduGuard(limits).check(pdu(4, Buffer.alloc(20_001)).subarray(0, 6)) ?? '', /exceeds/);
  assert.match(new PduGuard(limits).check(pdu(1, Buffer.alloc(1001))) ?? '', /exceeds/);
  const endless = Buffer.concat([1, 2].map(() => pdu(4, pdv(true, false, Buffer.alloc(200)))));
  assert.match(new PduGuard(limits).check(endless) ?? '', /command larger/);
  assert.match(new PduGuard(limits).check(pdu(4, Buffer.from([0, 0, 0, 50, 1, 0]))) ?? '', /past the end/);
});

test('association policy: promiscuous by default only without peers; slots are released once', () => {
  const { UserIdentityType } = dimse.constants;
  const base = {
    aeTitle: 'GW',
    maxAssociations: 2,
    maxAssociationsPerPeer: 1,
    userIdentity: { required: false, users: [{ username: 'u', password: 'p' }] },
  };
  assert.equal(new AssociationPolicy({ ...base, peers: [] }).promiscuous, true);
  const policy = new AssociationPolicy({ ...base, peers: [{ aeTitle: 'MOD' }] });
  assert.equal(policy.promiscuous, false);
  const req = { calledAe: 'GW', callingAe: 'MOD', address: '::ffff:10.0.0.1' };
  const first = policy.decide({
    ...req,
    identity: {
      type: UserIdentityType.UsernameAndPasscode,
      primary: 'u',
      secondary: 'p',
      positiveResponseRequested: true,
    },
  });
  assert.ok(first.accept && first.confirmIdentity && first.username === 'u');
  assert.equal(policy.decide(req).accept, false, 'per-peer limit');
  first.release();
  first.release();
  assert.equal(policy.activeAssociations, 0);
  const again = policy.decide(req);
  assert.ok(again.accept && !again.confirmIdentity);
  assert.equal(policy.decide({ ...req, callingAe: 'OTHER' }).accept, false);
});

test('sequence depth: refused beyond the limit, deep-but-legal passes, truncation is reported', () => {
  const nested = (depth: number) => {
    const open = Buffer.from([
      0x77, 0x77, 0x10, 0x00, 0x53, 0x51, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0x00, 0xe0, 0xff, 0xff,
      0xff, 0xff,
    ]);
    const close = Buffer.from([0xfe, 0xff, 0x0d, 0xe0, 0, 0, 0, 0, 0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0]);
    const meta = encodeFileMetaHeader({
      sopClassUid: '1.2.3',
      sopInstanceUid: '1.2.3.4',
      transferSyntaxUid: '1.2.840.10008.1.2.1',
    });
    return Buffer.concat([meta, ...Array<Buffer>(depth).fill(open), ...Array<Buffer>(depth).fill(close)]);
  };
  assert.deepEqual(checkSequenceDepth(nested(MAX_SEQUENCE_DEPTH)), { reachedEnd: true });
  assert.throws(() => checkSequenceDepth(nested(MAX_SEQUENCE_DEPTH + 1)), Part10Error);
  const whole = nested(3);
  assert.match(checkSequenceDepth(whole.subarray(0, whole.length - 8)).endsInside ?? '', /never closed/);
});
