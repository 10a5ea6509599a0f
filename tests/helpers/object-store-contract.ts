// The ObjectStore contract as assertions, for every backend: the filesystem store runs them in
// tests/unit/storage/filesystem-store.test.ts, the S3 store against s3rver. Keys are the shapes objectKey
// builds (a backend may refuse anything else).
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { finished } from 'node:stream/promises';
import { describe, test } from 'node:test';
import { objectKey } from '../../src/storage/object-keys.ts';
import {
  InstanceTooLargeError,
  ObjectNotFoundError,
  type ObjectStore,
  type StagedWrite,
} from '../../src/storage/object-store.ts';

export interface StoreUnderTest {
  store: ObjectStore;
  /** Removes whatever the store wrote (a temp directory, a bucket prefix). */
  cleanup(): Promise<void>;
}

const STUDY = '2.25.1001';
const SERIES = '2.25.1001.1';
const key = (sop: string, study = STUDY, series = SERIES) =>
  objectKey.instance({ studyUid: study, seriesUid: series, sopInstanceUid: sop });

async function keysUnder(store: ObjectStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of store.list(prefix)) out.push(o.key);
  return out;
}

/** Writes bytes through a staged write and waits until the stream finished (durable in staging). */
async function staged(store: ObjectStore, bytes: Buffer, maxBytes?: number): Promise<StagedWrite> {
  const s = store.stage(maxBytes);
  s.stream.end(bytes);
  await finished(s.stream);
  return s;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function describeObjectStoreContract(name: string, makeStore: () => Promise<StoreUnderTest>): void {
  describe(`ObjectStore contract: ${name}`, () => {
    const withStore = (fn: (store: ObjectStore) => Promise<void>) => async () => {
      const { store, cleanup } = await makeStore();
      try {
        await store.init();
        await fn(store);
      } finally {
        await store.close();
        await cleanup();
      }
    };

    test(
      'a staged write is neither visible nor listed until commit; then it is, whole',
      withStore(async (store) => {
        const bytes = Buffer.from('DICM'.repeat(50_000)); // 200 kB: beyond the 64 KiB head
        const s = await staged(store, bytes);
        assert.equal(s.stream.bytesWritten, bytes.length);
        assert.deepEqual(s.stream.head, bytes.subarray(0, 64 * 1024), 'the head is the first 64 KiB');
        assert.deepEqual(
          await s.read(100_000, 8),
          bytes.subarray(100_000, 100_008),
          'staged bytes read back',
        );
        assert.deepEqual(await s.read(bytes.length - 4, 100), bytes.subarray(-4), 'fewer at the end');
        const k = key('2.25.1001.1.1');
        assert.equal(await store.stat(k), undefined);
        assert.deepEqual(await keysUnder(store, objectKey.studiesPrefix), []);
        await s.commit(k);
        assert.deepEqual(await store.get(k), bytes);
        assert.equal((await store.stat(k))?.size, bytes.length);
        assert.deepEqual(await keysUnder(store, objectKey.studiesPrefix), [k]);
        await s.discard(); // a no-op after commit
        assert.deepEqual(await store.get(k), bytes);
      }),
    );

    test(
      'a discarded staged write leaves nothing; discard is idempotent',
      withStore(async (store) => {
        const s = await staged(store, Buffer.from('x'.repeat(1000)));
        await s.discard();
        await s.discard();
        await assert.rejects(s.commit(key('2.25.1001.1.2')));
        assert.deepEqual(await keysUnder(store, ''), []);
        assert.equal(await store.cleanupStaging(0), 0, 'nothing left in staging');
      }),
    );

    test(
      'commit replaces an earlier copy atomically: a reader sees the old or the new object, never a mix',
      withStore(async (store) => {
        const k = key('2.25.1001.1.3');
        const versions = Array.from({ length: 12 }, (_, i) => Buffer.alloc(150_000 + i * 1000, 65 + i));
        await store.put(k, versions[0]!);
        let writing = true;
        const reads: Buffer[] = [];
        const reader = (async () => {
          while (writing) {
            reads.push(await store.get(k));
            await sleep(0);
          }
        })();
        for (const v of versions.slice(1)) await (await staged(store, v)).commit(k);
        writing = false;
        await reader;
        assert.ok(reads.length > 0);
        for (const r of reads)
          assert.ok(
            versions.some((v) => v.equals(r)),
            `a read of ${r.length} bytes is none of the versions`,
          );
        assert.deepEqual(await store.get(k), versions.at(-1));
        assert.deepEqual(await keysUnder(store, objectKey.studiesPrefix), [k], 'one object, not several');
      }),
    );

    test(
      'put, get, stat, localCopy, list, delete and deletePrefix',
      withStore(async (store) => {
        const a = key('2.25.1001.1.10');
        const b = key('2.25.1001.1.9');
        const c = key('2.25.2002.1.1', '2.25.2002', '2.25.2002.1');
        // A study whose UID extends another's: listed in key order ('.' sorts before '/'), and never
        // under the other study's prefix.
        const d = key('2.25.1001.5.1.1', '2.25.1001.5', '2.25.1001.5.1');
        const sr = objectKey.outbox(STUDY, '2.25.9001');
        const seg = objectKey.outbox(STUDY, '2.25.9002');
        const other = objectKey.outbox('2.25.2002', '2.25.9003');
        const before = Date.now();
        for (const [k, v] of [
          [a, 'a'],
          [b, 'bb'],
          [c, 'ccc'],
          [d, 'dddd'],
          [sr, 'sr'],
          [seg, 'seg'],
          [other, 'other'],
        ] as const)
          await store.put(k, Buffer.from(v));
        assert.equal((await store.get(b)).toString(), 'bb');
        const info = await store.stat(c);
        assert.equal(info?.key, c);
        assert.equal(info?.size, 3);
        assert.ok(
          info!.modifiedAt >= before - 1000 && info!.modifiedAt <= Date.now() + 1000,
          'a recent time',
        );
        await store.put(b, Buffer.from('replaced'));
        assert.equal((await store.get(b)).toString(), 'replaced');

        const copy = await store.localCopy(a);
        assert.equal((await readFile(copy.path)).toString(), 'a');
        await copy.release();

        // Key order, only what is under the prefix, staged writes never.
        const pending = await staged(store, Buffer.from('pending'));
        assert.deepEqual(await keysUnder(store, objectKey.studyPrefix(STUDY)), [a, b].sort());
        assert.deepEqual(await keysUnder(store, objectKey.studiesPrefix), [a, b, c, d].sort());
        assert.deepEqual(await keysUnder(store, objectKey.outboxPrefix(STUDY)), [sr, seg].sort());
        assert.deepEqual(await keysUnder(store, ''), [a, b, c, d, sr, seg, other].sort());
        assert.deepEqual(await keysUnder(store, 'studies/2.25.1001'), [a, b, d].sort(), 'a partial prefix');
        await pending.discard();

        await store.delete(a);
        await store.delete(a); // absent is not an error
        assert.equal(await store.stat(a), undefined);
        await assert.rejects(store.get(a), (e: unknown) => e instanceof ObjectNotFoundError && e.key === a);
        await assert.rejects(store.localCopy(a), ObjectNotFoundError);

        assert.equal(await store.deletePrefix(objectKey.outboxPrefix(STUDY)), 2);
        assert.equal(await store.deletePrefix(objectKey.outboxPrefix(STUDY)), 0);
        assert.deepEqual(await keysUnder(store, ''), [b, c, d, other].sort(), 'other studies untouched');
      }),
    );

    test(
      'retire removes the copy written by the cut-off, keeps one re-sent after it, says absent otherwise',
      withStore(async (store) => {
        const k = key('2.25.1001.1.20');
        assert.equal(await store.retire(k, Date.now()), 'absent');

        await store.put(k, Buffer.from('first copy'));
        const written = (await store.stat(k))!.modifiedAt;
        assert.equal(await store.retire(k, written), 'removed');
        assert.equal(await store.stat(k), undefined);

        // A copy re-sent after the record's time (the cut-off) stays, whole.
        const recordTime = Date.now();
        await sleep(20);
        await store.put(k, Buffer.from('re-sent copy'));
        assert.equal(await store.retire(k, recordTime), 'kept');
        assert.equal((await store.get(k)).toString(), 're-sent copy');
        assert.deepEqual(await keysUnder(store, objectKey.studiesPrefix), [k]);
      }),
    );

    test(
      'cleanupStaging removes only staged writes older than the cut-off',
      withStore(async (store) => {
        const old = await staged(store, Buffer.from('abandoned'));
        assert.equal(await store.cleanupStaging(3_600_000), 0, 'a young staged write stays');
        await sleep(50);
        const young = store.stage();
        young.stream.write(Buffer.from('in flight'));
        assert.equal(await store.cleanupStaging(40), 1, 'the abandoned one goes');
        await assert.rejects(old.commit(key('2.25.1001.1.30')), 'its bytes are gone');
        young.stream.end();
        await finished(young.stream);
        await young.commit(key('2.25.1001.1.31'));
        assert.equal((await store.get(key('2.25.1001.1.31'))).toString(), 'in flight');
      }),
    );

    test(
      'more than maxBytes fails the staged stream with InstanceTooLargeError',
      withStore(async (store) => {
        const s = store.stage(1000);
        s.stream.write(Buffer.alloc(600));
        s.stream.end(Buffer.alloc(600));
        await assert.rejects(finished(s.stream), (e: unknown) => {
          assert.ok(e instanceof InstanceTooLargeError);
          assert.equal(e.maxBytes, 1000);
          return true;
        });
        await s.discard();
        assert.deepEqual(await keysUnder(store, ''), []);
      }),
    );

    test(
      'hostile or unknown keys are refused before anything is read or written',
      withStore(async (store) => {
        const hostile = [
          '',
          '../x.dcm',
          '/etc/passwd',
          'studies/../../x.dcm',
          'studies/2.25.1/../2.25.3/2.25.4.dcm',
          'studies/2.25.1//2.25.4.dcm',
          'studies/2.25.1/2.25.2/2.25.3.dcm/x',
          'studies/2.25.1/2.25.2/../../../../etc/passwd',
          'studies/2.25.1/2.25.2/2.25.3',
          'outbox/2.25.1/../2.25.3.dcm',
          'outbox/2.25.1/2.25.2/2.25.3.dcm',
          'outbox/2.25.1/x.dcm',
          'other/2.25.1/2.25.3.dcm',
          'studies/2.25.1/2.25.2/2.25.3.dcm\0',
        ];
        for (const k of hostile) {
          const what = JSON.stringify(k);
          await assert.rejects(store.put(k, Buffer.from('x')), `put ${what}`);
          await assert.rejects(store.get(k), `get ${what}`);
          await assert.rejects(store.stat(k), `stat ${what}`);
          await assert.rejects(store.localCopy(k), `localCopy ${what}`);
          await assert.rejects(store.delete(k), `delete ${what}`);
          await assert.rejects(store.retire(k, Date.now()), `retire ${what}`);
          const s = await staged(store, Buffer.from('x'));
          await assert.rejects(s.commit(k), `commit ${what}`);
          await s.discard();
        }
        for (const prefix of ['../', '/', 'studies/../', 'outbox/..', 'studies/2.25.1/../../'])
          await assert.rejects(store.deletePrefix(prefix), `deletePrefix ${JSON.stringify(prefix)}`);
        assert.deepEqual(await keysUnder(store, ''), [], 'nothing was written under any key');
      }),
    );
  });
}
