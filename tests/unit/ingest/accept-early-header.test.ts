import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { finished } from 'node:stream/promises';
import { InstanceAcceptor, type EarlyHeader } from '../../../src/ingest/accept.ts';
import { readInstanceHeader } from '../../../src/dicom/part10.ts';
import { DiskWatermark } from '../../../src/storage/disk-watermark.ts';
import { FilesystemObjectStore } from '../../../src/storage/filesystem-store.ts';
import type { InstanceRecord } from '../../../src/pipeline/instance-record.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const CT_SLICE = path.join(
  repoRoot,
  '../shared/dicom-samples/ct-series/philips-ingenuity-head-phantom-5mm/I10.dcm',
);
const SOURCE = { path: 'dimse' as const, callingAe: 'CT1', address: '127.0.0.1' };

async function withAcceptor(fn: (acceptor: InstanceAcceptor, store: FilesystemObjectStore) => Promise<void>) {
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-early-'));
  const store = new FilesystemObjectStore(dir);
  try {
    await store.init();
    const disk = new DiskWatermark(dir, 0);
    await disk.refresh();
    const stored: InstanceRecord[] = [];
    await fn(new InstanceAcceptor({ store, disk, onStored: async (i) => void stored.push(i) }), store);
  } finally {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  }
}

test('the header read while the stream finishes is the one accept would read', () =>
  withAcceptor(async (acceptor, store) => {
    const bytes = await readFile(CT_SLICE);
    const staged = store.stage();
    staged.stream.end(bytes);
    // Started before the stream finished, as the C-STORE path does while the fdatasync runs.
    const early = acceptor.readHeaderEarly(staged);
    await finished(staged.stream);
    const got = await early;
    assert.equal(got.size, bytes.length);
    const direct = await readInstanceHeader(
      { size: bytes.length, read: async () => bytes },
      {
        prefix: { bytes, fileSize: bytes.length },
      },
    );
    assert.deepEqual(got.header, direct);
    const outcome = await acceptor.accept(staged, SOURCE, {}, early);
    assert.ok(outcome.ok);
    assert.equal(outcome.instance.sopInstanceUid, direct.sopInstanceUid);
  }));

test('an early header is used only for the size it was read at; otherwise accept reads the file', () =>
  withAcceptor(async (acceptor, store) => {
    const bytes = await readFile(CT_SLICE);
    const real = await readInstanceHeader(
      { size: bytes.length, read: async () => bytes },
      {
        prefix: { bytes, fileSize: bytes.length },
      },
    );
    const forged = { ...real, sopInstanceUid: '2.25.1', studyUid: '2.25.2' };
    const send = async (early: EarlyHeader) => {
      const staged = store.stage();
      staged.stream.end(bytes);
      await finished(staged.stream);
      const outcome = await acceptor.accept(staged, SOURCE, {}, Promise.resolve(early));
      assert.ok(outcome.ok);
      return outcome.instance;
    };
    // Read at the final size: accept takes it as it is (the forged UIDs show it was not read again).
    assert.equal((await send({ size: bytes.length, header: forged })).sopInstanceUid, '2.25.1');
    // Read before the last bytes arrived: parsed again from the whole file.
    assert.equal(
      (await send({ size: bytes.length - 1, header: forged })).sopInstanceUid,
      real.sopInstanceUid,
    );
    // Not readable from the first bytes alone: parsed from the file.
    assert.equal((await send({ size: bytes.length, header: undefined })).sopInstanceUid, real.sopInstanceUid);
  }));

test('an early read of a data set that is not DICOM resolves without a header; accept refuses it', () =>
  withAcceptor(async (acceptor, store) => {
    const staged = store.stage();
    staged.stream.end(Buffer.alloc(4096, 0x41));
    const early = acceptor.readHeaderEarly(staged);
    await finished(staged.stream);
    assert.equal((await early).header, undefined);
    const outcome = await acceptor.accept(staged, SOURCE, {}, early);
    assert.equal(outcome.ok, false);
    assert.equal(!outcome.ok && outcome.kind, 'refused');
  }));
