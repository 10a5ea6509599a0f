// Hostile Deflated Explicit VR Little Endian data sets, built here: a deflate bomb (0.5 MB that inflates to
// 512 MiB of Pixel Data) and sequences nested 4,000 deep inside a deflated body (753 bytes). By C-STORE and by
// STOW-RS each is refused within 5 s, the gateway's peak memory barely moves, it keeps serving, and SIGTERM
// right after a bomb still ends it.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { createDeflateRaw, deflateRawSync } from 'node:zlib';
import { encodeFileMetaHeader } from '../../src/dicom/part10.ts';
import {
  makeModelsDir,
  SHARED,
  sigtermExitMs,
  startGateway,
  type GatewayProcess,
} from '../helpers/gateway.ts';
import { rawStore, storeResponses } from '../helpers/ingest.ts';

const DEFLATED = '1.2.840.10008.1.2.1.99';
const SC_CLASS = '1.2.840.10008.5.1.4.1.1.7';
const STUDY = '1.2.826.0.1.3680043.10.7.1';
const SERIES = '1.2.826.0.1.3680043.10.7.2';
const BOMB_SOP = '1.2.826.0.1.3680043.10.7.3';
const NESTED_SOP = '1.2.826.0.1.3680043.10.7.4';
const MIB = 1024 ** 2;
const CT = path.join(SHARED, 'dicom-samples/ct-series/philips-ingenuity-head-phantom-5mm/I10.dcm');

function el(group: number, element: number, vr: string, value: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt16LE(group, 0);
  head.writeUInt16LE(element, 2);
  head.write(vr, 4, 'ascii');
  head.writeUInt16LE(value.length, 6);
  return Buffer.concat([head, value]);
}
const uid = (u: string) => Buffer.from(u.length % 2 ? `${u}\0` : u, 'ascii');
const us = (v: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v, 0);
  return b;
};
const identity = (sop: string) => [
  el(0x0008, 0x0016, 'UI', uid(SC_CLASS)),
  el(0x0008, 0x0018, 'UI', uid(sop)),
  el(0x0020, 0x000d, 'UI', uid(STUDY)),
  el(0x0020, 0x000e, 'UI', uid(SERIES)),
];

/** Deflated body of a valid 16384 × 16384 × 16-bit image: 512 MiB of zero Pixel Data. */
async function deflateBomb(): Promise<Buffer> {
  const pixelBytes = 512 * MIB;
  const pixelHead = Buffer.alloc(12);
  pixelHead.writeUInt16LE(0x7fe0, 0);
  pixelHead.writeUInt16LE(0x0010, 2);
  pixelHead.write('OW', 4, 'ascii');
  pixelHead.writeUInt32LE(pixelBytes, 8);
  const head = Buffer.concat([
    ...identity(BOMB_SOP),
    el(0x0028, 0x0002, 'US', us(1)),
    el(0x0028, 0x0004, 'CS', Buffer.from('MONOCHROME2 ')),
    el(0x0028, 0x0010, 'US', us(16384)),
    el(0x0028, 0x0011, 'US', us(16384)),
    el(0x0028, 0x0100, 'US', us(16)),
    el(0x0028, 0x0101, 'US', us(16)),
    el(0x0028, 0x0102, 'US', us(15)),
    el(0x0028, 0x0103, 'US', us(0)),
    pixelHead,
  ]);
  const deflate = createDeflateRaw({ level: 9 });
  const out: Buffer[] = [];
  deflate.on('data', (c: Buffer) => out.push(c));
  const done = new Promise((resolve, reject) => deflate.on('end', resolve).on('error', reject));
  deflate.write(head);
  const zeros = Buffer.alloc(MIB);
  for (let i = 0; i < pixelBytes / MIB; i++) {
    if (!deflate.write(zeros)) await new Promise((r) => deflate.once('drain', r));
  }
  deflate.end();
  await done;
  return Buffer.concat(out);
}

/** Deflated body whose private sequence nests `depth` levels (undefined lengths). */
function deflatedNested(depth: number): Buffer {
  const sqOpen = Buffer.from([0x77, 0x77, 0x10, 0x00, 0x53, 0x51, 0, 0, 0xff, 0xff, 0xff, 0xff]);
  const itemOpen = Buffer.from([0xfe, 0xff, 0x00, 0xe0, 0xff, 0xff, 0xff, 0xff]);
  const itemClose = Buffer.from([0xfe, 0xff, 0x0d, 0xe0, 0, 0, 0, 0]);
  const sqClose = Buffer.from([0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0]);
  const parts: Buffer[] = [...identity(NESTED_SOP)];
  for (let i = 0; i < depth; i++) parts.push(sqOpen, itemOpen);
  for (let i = 0; i < depth; i++) parts.push(itemClose, sqClose);
  return deflateRawSync(Buffer.concat(parts), { level: 9 });
}

const part10 = (sop: string, body: Buffer) =>
  Buffer.concat([
    encodeFileMetaHeader({ sopClassUid: SC_CLASS, sopInstanceUid: sop, transferSyntaxUid: DEFLATED }),
    body,
  ]);

let gateway: GatewayProcess;
let bomb: Buffer;
let nested: Buffer;

before(async () => {
  [bomb, nested] = [await deflateBomb(), deflatedNested(4000)];
  gateway = await startGateway({ modelsDir: await makeModelsDir(['uniformity']) });
});
after(async () => {
  await gateway?.dispose();
});

/** Peak resident memory of the gateway so far (VmHWM), in bytes. */
function peakRss(pid: number): number {
  const kb = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  assert.ok(kb !== undefined);
  return Number(kb) * 1024;
}

async function stow(file: Buffer): Promise<{ http: number; reason?: number; ms: number }> {
  const boundary = 'deflate-hostile';
  const started = Date.now();
  try {
    const res = await fetch(`http://127.0.0.1:${gateway.httpPort}/dicomweb/studies`, {
      method: 'POST',
      headers: { 'Content-Type': `multipart/related; type="application/dicom"; boundary=${boundary}` },
      body: new Uint8Array(
        Buffer.concat([
          Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`),
          file,
          Buffer.from(`\r\n--${boundary}--\r\n`),
        ]),
      ),
      signal: AbortSignal.timeout(15_000),
    });
    const json = (await res.json()) as Record<string, { Value?: Record<string, { Value?: number[] }>[] }>;
    const reason = json['00081198']?.Value?.[0]?.['00081197']?.Value?.[0];
    return { http: res.status, ...(reason !== undefined ? { reason } : {}), ms: Date.now() - started };
  } catch {
    return { http: 0, ms: Date.now() - started };
  }
}

async function cstore(sop: string, body: Buffer): Promise<{ status?: number; ms: number }> {
  const started = Date.now();
  const status = await rawStore(gateway.dimsePort, 'HOSTILE', 'AIGATEWAY', SC_CLASS, sop, body, DEFLATED);
  return { ...(status !== undefined ? { status } : {}), ms: Date.now() - started };
}

test(
  'a deflate bomb and a 4,000-deep deflated nesting are refused within 5 s on both paths, in bounded memory',
  {
    timeout: 120_000,
  },
  async (t) => {
    assert.ok(bomb.length < 1024 ** 2, `bomb is ${bomb.length} bytes`);
    const pid = gateway.pid!;
    const peakBefore = peakRss(pid);

    const nestedByDimse = await cstore(NESTED_SOP, nested);
    assert.equal(nestedByDimse.status, 0xc000, 'C-STORE of the nested data set');
    assert.ok(
      nestedByDimse.ms < 5000,
      `C-STORE of the nested data set answered after ${nestedByDimse.ms} ms`,
    );
    const nestedByStow = await stow(part10(NESTED_SOP, nested));
    assert.deepEqual(
      [nestedByStow.http, nestedByStow.reason],
      [409, 0xc000],
      'STOW-RS of the nested data set',
    );
    assert.ok(nestedByStow.ms < 5000, `STOW-RS of the nested data set answered after ${nestedByStow.ms} ms`);

    const bombByDimse = await cstore(BOMB_SOP, bomb);
    assert.equal(bombByDimse.status, 0xa700, 'C-STORE of the deflate bomb');
    assert.ok(bombByDimse.ms < 5000, `C-STORE of the deflate bomb answered after ${bombByDimse.ms} ms`);
    const bombByStow = await stow(part10(BOMB_SOP, bomb));
    assert.deepEqual([bombByStow.http, bombByStow.reason], [409, 0xa700], 'STOW-RS of the deflate bomb');
    assert.ok(bombByStow.ms < 5000, `STOW-RS of the deflate bomb answered after ${bombByStow.ms} ms`);

    const grown = peakRss(pid) - peakBefore;
    t.diagnostic(
      `answers: nested ${nestedByDimse.ms}/${nestedByStow.ms} ms, bomb ${bombByDimse.ms}/${bombByStow.ms} ms ` +
        `(C-STORE/STOW-RS); peak RSS +${(grown / MIB).toFixed(1)} MiB`,
    );
    assert.ok(grown < 200 * MIB, `peak RSS grew by ${(grown / MIB).toFixed(0)} MiB`);

    // Nothing of either reached the spool, and the gateway still stores a real image.
    const studies = await gateway.api<{ studyUid: string }[]>('/api/studies');
    assert.ok(!studies.some((s) => s.studyUid === STUDY));
    const normal = await gateway.store([CT], { args: ['-v'], timeoutMs: 20_000 });
    assert.deepEqual(storeResponses(`${normal.stdout}${normal.stderr}`), ['Success'], normal.stderr);
  },
);

test('SIGTERM right after deflate bombs ends the gateway within 15 s', { timeout: 90_000 }, async (t) => {
  // Bombs by both paths, time for whatever was accepted to reach routing and inference, then one more in
  // flight when SIGTERM arrives.
  await cstore(BOMB_SOP, bomb);
  await stow(part10(BOMB_SOP, bomb));
  await new Promise((r) => setTimeout(r, 3000));
  const inFlight = cstore(BOMB_SOP, bomb);
  await new Promise((r) => setTimeout(r, 100));
  const ms = await sigtermExitMs(gateway, 15_000);
  t.diagnostic(`exited ${ms} ms after SIGTERM`);
  await inFlight;
  assert.ok(ms < 15_000, 'the gateway did not exit within 15 s of SIGTERM');
});
