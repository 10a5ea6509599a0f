// Shared set-up for the ingest tests: a DIMSE server on a temp spool, dcmtk runs, and the statuses storescu
// reports (storescu exits 0 even when every instance is refused, so its -v output is what we check).
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  startDimseServer,
  type DimseServer,
  type DimseServerOptions,
  type InstanceRecord,
} from '../../src/ingest/dimse/index.ts';
import { FilesystemObjectStore } from '../../src/storage/filesystem-store.ts';
import { objectKey } from '../../src/storage/object-keys.ts';
import type { Spool } from '../../src/storage/spool.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const SAMPLES = path.join(path.resolve(repoRoot, '../shared'), 'dicom-samples');

export interface Run {
  code: number;
  out: string;
}

/** Runs a dcmtk tool; never rejects on a non-zero exit. TCP_NODELAY=1 keeps dcmtk from waiting on Nagle. */
export function dcmtk(cmd: string, args: string[], timeoutMs = 60_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { env: { ...process.env, TCP_NODELAY: '1' }, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') {
          reject(err);
          return;
        }
        resolve({ code: err ? Number(err.code) : 0, out: `${stdout}${stderr}` });
      },
    );
  });
}

/** The statuses of every "Received Store Response" line of `storescu -v`, e.g. 'Success', 'Error: ...'. */
export function storeResponses(out: string): string[] {
  return [...out.matchAll(/Received Store Response \(([^)]*)\)/g)].map((m) => m[1] ?? '');
}

export interface TestDimse {
  server: DimseServer;
  store: FilesystemObjectStore;
  dataDir: string;
  stored: InstanceRecord[];
  close(): Promise<void>;
}

export async function startTestDimse(
  overrides: Partial<Omit<DimseServerOptions, 'store' | 'dataDir'>> = {},
): Promise<TestDimse> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'aigw-ingest-'));
  const store = new FilesystemObjectStore(dataDir);
  await store.init();
  const stored: InstanceRecord[] = [];
  const server = await startDimseServer({
    aeTitle: 'AIGW_TEST',
    host: '127.0.0.1',
    port: 0,
    maxPduLength: 262_144,
    onStored: async (inst) => {
      stored.push(inst);
    },
    ...overrides,
    store,
    dataDir,
  });
  return {
    server,
    store,
    dataDir,
    stored,
    async close() {
      await server.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Names of files left in the store's staging directory (should be none once transfers are over). */
export async function tempFiles(store: FilesystemObjectStore): Promise<string[]> {
  return leftoverTempFiles(store.spool);
}

/**
 * Names of the files in a spool's staging directory other than the empty ones it made ahead for the next
 * transfers (Spool.readyTempFiles): what a transfer left behind.
 */
export async function leftoverTempFiles(spool: Spool): Promise<string[]> {
  const ready = new Set(spool.readyTempFiles());
  return (await readdir(spool.tmpDir).catch(() => [])).filter((name) => !ready.has(name));
}

/** The file behind a stored instance's key (filesystem store: the store's own file). */
export async function storedFile(store: FilesystemObjectStore, inst: InstanceRecord): Promise<string> {
  return (await store.localCopy(objectKey.instance(inst))).path;
}

// ---- Raw DICOM upper-layer PDUs, for tests that must misbehave in ways no real tool will ----

const VERIFICATION = '1.2.840.10008.1.1';
const EXPLICIT_LE = '1.2.840.10008.1.2.1';
const IMPLICIT_LE = '1.2.840.10008.1.2';

function evenUid(uid: string): Buffer {
  const b = Buffer.from(uid, 'ascii');
  return b.length % 2 === 0 ? b : Buffer.concat([b, Buffer.from([0])]);
}

function item(type: number, body: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt8(type, 0);
  head.writeUInt16BE(body.length, 2);
  return Buffer.concat([head, body]);
}

function pdu(type: number, body: Buffer): Buffer {
  const head = Buffer.alloc(6);
  head.writeUInt8(type, 0);
  head.writeUInt32BE(body.length, 2);
  return Buffer.concat([head, body]);
}

function ae(title: string): Buffer {
  return Buffer.from(title.padEnd(16, ' '), 'ascii');
}

/**
 * A-ASSOCIATE-RQ proposing Verification (context 1) and one storage class (context 3), by default with
 * explicit + implicit LE.
 */
export function associateRq(
  calling: string,
  called: string,
  storageClass: string,
  transferSyntaxes: readonly string[] = [EXPLICIT_LE, IMPLICIT_LE],
): Buffer {
  const fixed = Buffer.alloc(4);
  fixed.writeUInt16BE(1, 0);
  const context = (id: number, abstract: string) =>
    item(
      0x20,
      Buffer.concat([
        Buffer.from([id, 0, 0, 0]),
        item(0x30, Buffer.from(abstract, 'ascii')),
        ...transferSyntaxes.map((ts) => item(0x40, Buffer.from(ts, 'ascii'))),
      ]),
    );
  const maxLength = Buffer.alloc(4);
  maxLength.writeUInt32BE(65536, 0);
  const userInfo = item(
    0x50,
    Buffer.concat([item(0x51, maxLength), item(0x52, Buffer.from('1.2.3.4', 'ascii'))]),
  );
  return pdu(
    0x01,
    Buffer.concat([
      fixed,
      ae(called),
      ae(calling),
      Buffer.alloc(32),
      item(0x10, Buffer.from('1.2.840.10008.3.1.1.1', 'ascii')),
      context(1, VERIFICATION),
      context(3, storageClass),
      userInfo,
    ]),
  );
}

/** P-DATA-TF with one PDV; control bit 0 = command, bit 1 = last fragment. */
export function pData(contextId: number, command: boolean, last: boolean, value: Buffer): Buffer {
  const head = Buffer.alloc(6);
  head.writeUInt32BE(value.length + 2, 0);
  head.writeUInt8(contextId, 4);
  head.writeUInt8((command ? 1 : 0) | (last ? 2 : 0), 5);
  return pdu(0x04, Buffer.concat([head, value]));
}

export const releaseRq = (): Buffer => pdu(0x05, Buffer.alloc(4));

/** Implicit VR little endian command group (PS3.7 E.1), group length first. */
function commandSet(elements: [number, Buffer][]): Buffer {
  const parts = elements.map(([el, value]) => {
    const head = Buffer.alloc(8);
    head.writeUInt16LE(0x0000, 0);
    head.writeUInt16LE(el, 2);
    head.writeUInt32LE(value.length, 4);
    return Buffer.concat([head, value]);
  });
  const body = Buffer.concat(parts);
  const groupLength = Buffer.alloc(12);
  groupLength.writeUInt32LE(0x00000000, 0);
  groupLength.writeUInt32LE(4, 4);
  groupLength.writeUInt32LE(body.length, 8);
  return Buffer.concat([groupLength, body]);
}

const us = (v: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v, 0);
  return b;
};

export function cEchoRq(messageId: number): Buffer {
  return commandSet([
    [0x0002, evenUid(VERIFICATION)],
    [0x0100, us(0x0030)],
    [0x0110, us(messageId)],
    [0x0800, us(0x0101)],
  ]);
}

export function cStoreRq(messageId: number, sopClass: string, sopInstance: string): Buffer {
  return commandSet([
    [0x0002, evenUid(sopClass)],
    [0x0100, us(0x0001)],
    [0x0110, us(messageId)],
    [0x0700, us(0)],
    [0x0800, us(0x0000)],
    [0x1000, evenUid(sopInstance)],
  ]);
}

/** Sends bytes on a fresh connection; resolves with everything received once the server closes (or after idleMs). */
export function exchange(port: number, steps: Buffer[], idleMs = 2000): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = netConnect(port, '127.0.0.1');
    let timer: NodeJS.Timeout | undefined;
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(Buffer.concat(chunks));
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(finish, idleMs);
    };
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      arm();
      // A-RELEASE-RP, A-ASSOCIATE-RJ or A-ABORT ends the exchange.
      const all = Buffer.concat(chunks);
      if (lastPduType(all) !== undefined && [0x03, 0x06, 0x07].includes(lastPduType(all)!)) finish();
    });
    socket.on('error', finish);
    socket.on('close', finish);
    socket.once('connect', () => {
      for (const s of steps) socket.write(s);
      arm();
    });
  });
}

function lastPduType(buf: Buffer): number | undefined {
  let pos = 0;
  let type: number | undefined;
  while (pos + 6 <= buf.length) {
    type = buf.readUInt8(pos);
    pos += 6 + buf.readUInt32BE(pos + 2);
  }
  return pos === buf.length ? type : undefined;
}

/** The C-STORE status (0000,0900) in a server's P-DATA answer, or undefined when none came back. */
export function storeStatus(received: Buffer): number | undefined {
  const tag = Buffer.from([0x00, 0x00, 0x00, 0x09, 0x02, 0x00, 0x00, 0x00]);
  const at = received.indexOf(tag);
  return at >= 0 && at + 10 <= received.length ? received.readUInt16LE(at + 8) : undefined;
}

/**
 * One association that C-STOREs `dataset` (explicit VR LE, or the one `transferSyntax` proposed alone) in PDV
 * fragments of 16 KiB, then releases.
 */
export function rawStoreSteps(
  calling: string,
  called: string,
  sopClass: string,
  sopInstance: string,
  dataset: Buffer,
  transferSyntax?: string,
): Buffer[] {
  const steps = [
    associateRq(calling, called, sopClass, transferSyntax === undefined ? undefined : [transferSyntax]),
    pData(3, true, true, cStoreRq(1, sopClass, sopInstance)),
  ];
  const fragment = 16 * 1024;
  for (let at = 0; at < dataset.length || at === 0; at += fragment) {
    const end = Math.min(dataset.length, at + fragment);
    steps.push(pData(3, false, end >= dataset.length, dataset.subarray(at, end)));
    if (dataset.length === 0) break;
  }
  steps.push(releaseRq());
  return steps;
}

/** C-STOREs raw data set bytes over a hand-built association: the status the server answered, or undefined. */
export function rawStore(
  port: number,
  calling: string,
  called: string,
  sopClass: string,
  sopInstance: string,
  dataset: Buffer,
  transferSyntax?: string,
): Promise<number | undefined> {
  const steps = rawStoreSteps(calling, called, sopClass, sopInstance, dataset, transferSyntax);
  const release = steps.pop()!;
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = netConnect(port, '127.0.0.1');
    let status: number | undefined;
    const timer = setTimeout(() => socket.destroy(), 15_000);
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      if (status === undefined) {
        status = storeStatus(Buffer.concat(chunks));
        if (status !== undefined) socket.write(release);
      } else if (lastPduType(Buffer.concat(chunks)) === 0x06) socket.end();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(status);
    });
    socket.once('connect', () => {
      for (const s of steps) socket.write(s);
    });
  });
}
