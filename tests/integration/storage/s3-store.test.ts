// The S3 ObjectStore against a real S3-compatible server (s3rver in a child process on loopback): every
// method, staged writes invisible until commit, multipart with bounded memory, and the failures an
// operator meets (bucket missing, bad credentials, server down or silent) answered quickly and clearly.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { createS3ObjectStore } from '../../../src/storage/create-object-store.ts';
import { InstanceTooLargeError, ObjectNotFoundError } from '../../../src/storage/object-store.ts';
import { S3ObjectStore, type S3StoreOptions } from '../../../src/storage/s3-store.ts';
import { s3TestClient, startS3Server, type S3TestServer } from '../../helpers/s3-server.ts';

const execFileP = promisify(execFile);
const BUCKET = 'dicom-ai-gateway';
/**
 * s3rver removes a directory once its last object goes, racing with a write into it (a 500, or a write
 * lost): this object keeps site-a/staging/ from ever being empty. Real S3 has no directories.
 */
const SENTINEL = 'site-a/staging/0-s3rver-keeps-this-directory';
const MiB = 1024 * 1024;

let server: S3TestServer;
let work: string;
const stores: S3ObjectStore[] = [];

function options(over: Partial<S3StoreOptions> = {}): S3StoreOptions {
  return {
    bucket: BUCKET,
    endpoint: server.endpoint,
    region: server.region,
    prefix: 'site-a/',
    accessKeyId: server.accessKeyId,
    secretAccessKey: server.secretAccessKey,
    partSizeBytes: 5 * MiB,
    queueSize: 2,
    requestTimeoutMs: 5_000,
    connectTimeoutMs: 1_000,
    maxAttempts: 3,
    cacheDir: path.join(work, 'cache'),
    ...over,
  };
}

function makeStore(over: Partial<S3StoreOptions> = {}): S3ObjectStore {
  const store = new S3ObjectStore(options(over));
  stores.push(store);
  return store;
}

/** Every raw key in the bucket (any prefix; not the sentinel), to see staging objects and prefixes. */
async function rawKeys(): Promise<string[]> {
  const client = rawClient();
  try {
    const res = await client.send(new ListObjectsV2Command({ Bucket: BUCKET }));
    return (res.Contents ?? [])
      .map((o) => o.Key!)
      .filter((k) => k !== SENTINEL)
      .sort();
  } finally {
    client.destroy();
  }
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** Ends a staged stream; resolves on 'finish', rejects on 'error'. */
function finish(stream: NodeJS.WritableStream & { once: (e: string, f: (x?: unknown) => void) => unknown }) {
  return new Promise<void>((resolve, reject) => {
    stream.once('error', (e) => reject(e as Error));
    stream.once('finish', () => resolve());
    stream.end();
  });
}

async function timed<T>(p: Promise<T>): Promise<{ ms: number; result: PromiseSettledResult<T> }> {
  const t0 = performance.now();
  const [result] = await Promise.allSettled([p]);
  return { ms: performance.now() - t0, result: result! };
}

function rejection(r: PromiseSettledResult<unknown>): Error {
  assert.equal(r.status, 'rejected', 'expected a rejection');
  return (r as PromiseRejectedResult).reason as Error;
}

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'aigw-s3-store-'));
  server = await startS3Server({ buckets: [BUCKET] });
  await putSentinel();
});

async function putSentinel(): Promise<void> {
  const client = rawClient();
  await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: SENTINEL, Body: 'x' }));
  client.destroy();
}

function rawClient(): S3Client {
  return s3TestClient(server);
}

after(async () => {
  for (const s of stores) await s.close();
  await server.dispose();
  rmSync(work, { recursive: true, force: true });
});

describe('S3ObjectStore against s3rver', () => {
  test('put, get, stat, list, localCopy, delete and deletePrefix, every key under the prefix', async () => {
    const store = makeStore();
    await store.init();
    assert.equal(store.kind, 's3');
    assert.equal(store.location, `s3://${BUCKET}/site-a/`);
    const a = 'outbox/1.2.3/1.2.3.10.dcm';
    const b = 'outbox/1.2.3/1.2.3.11.dcm';
    const c = 'outbox/1.2.4/1.2.4.10.dcm';
    const before = Date.now();
    await store.put(a, Buffer.from('first'));
    await store.put(b, Buffer.from('second!'));
    await store.put(c, Buffer.from('third'));
    assert.deepEqual(await store.get(a), Buffer.from('first'));
    const st = await store.stat(b);
    assert.equal(st?.key, b);
    assert.equal(st?.size, 7);
    assert.ok(st!.modifiedAt >= before && st!.modifiedAt <= Date.now(), 'stat gives the write time in ms');
    assert.equal(await store.stat('outbox/1.2.3/9.9.dcm'), undefined);
    await assert.rejects(store.get('outbox/1.2.3/9.9.dcm'), ObjectNotFoundError);
    await assert.rejects(store.localCopy('outbox/1.2.3/9.9.dcm'), ObjectNotFoundError);
    assert.ok((await rawKeys()).includes(`site-a/${a}`), 'keys carry the prefix in the bucket');

    const listed = await collect(store.list('outbox/1.2.3/'));
    assert.deepEqual(
      listed.map((o) => [o.key, o.size]),
      [
        [a, 5],
        [b, 7],
      ],
    );
    assert.deepEqual(
      (await collect(store.list('outbox/'))).map((o) => o.key),
      [a, b, c],
    );

    const copy = await store.localCopy(b);
    assert.ok(copy.path.startsWith(path.join(work, 'cache')));
    assert.equal(readFileSync(copy.path, 'utf8'), 'second!');
    const copy2 = await store.localCopy(b);
    assert.notEqual(copy2.path, copy.path, 'each local copy has its own file');
    await copy.release();
    await copy.release();
    assert.equal(existsSync(copy.path), false);
    assert.equal(existsSync(copy2.path), true);
    await copy2.release();

    await store.delete(c);
    await store.delete(c); // absent is not an error
    assert.equal(await store.stat(c), undefined);
    assert.equal(await store.deletePrefix('outbox/1.2.3/'), 2);
    assert.deepEqual(await collect(store.list('outbox/')), []);
    assert.throws(() => store.fullKey('../escape.dcm'));
    assert.throws(() => store.fullKey('staging/x'));
  });

  test('a staged write is invisible until commit, keeps its head, reads back, and costs 3 requests', async () => {
    const store = makeStore();
    const key = 'studies/1.2.5/1.2.5.1/1.2.5.1.1.dcm';
    const bytes = randomBytes(200 * 1024);
    const staged = store.stage();
    for (let i = 0; i < bytes.length; i += 16 * 1024) staged.stream.write(bytes.subarray(i, i + 16 * 1024));
    await finish(staged.stream);
    assert.equal(staged.stream.bytesWritten, bytes.length);
    assert.deepEqual(staged.stream.head, bytes.subarray(0, 64 * 1024));
    assert.equal((await rawKeys()).filter((k) => k.startsWith('site-a/staging/')).length, 1);
    assert.deepEqual(await collect(store.list('')), [], 'staging is never listed');
    assert.deepEqual(await collect(store.list('studies/')), []);
    assert.equal(await store.stat(key), undefined);

    const counts0 = store.requestCounts();
    assert.deepEqual(await staged.read(10, 100), bytes.subarray(10, 110));
    assert.deepEqual(store.requestCounts(), counts0, 'a read inside the head sends nothing');
    assert.deepEqual(await staged.read(150_000, 10_000), bytes.subarray(150_000, 160_000));
    assert.deepEqual(await staged.read(bytes.length - 5, 100), bytes.subarray(bytes.length - 5));
    assert.deepEqual(await staged.read(bytes.length + 10, 100), Buffer.alloc(0));

    await staged.commit(key);
    assert.deepEqual(await store.get(key), bytes);
    assert.deepEqual(
      (await collect(store.list('studies/'))).map((o) => [o.key, o.size]),
      [[key, bytes.length]],
    );
    assert.deepEqual(
      (await rawKeys()).filter((k) => k.includes('staging/')),
      [],
      'the staging object went',
    );
    await staged.discard(); // a no-op after commit
    assert.equal((await store.stat(key))?.size, bytes.length);

    // Requests of one small instance: PUT staging, COPY to the key, DELETE staging.
    const fresh = makeStore();
    const one = fresh.stage();
    one.stream.write(randomBytes(50 * 1024));
    await finish(one.stream);
    await one.commit('studies/1.2.5/1.2.5.1/1.2.5.1.2.dcm');
    assert.deepEqual(fresh.requestCounts(), { CopyObject: 1, DeleteObject: 1, PutObject: 1 });
    await store.deletePrefix('studies/');
  });

  test('commit replaces an earlier copy, and a discarded or oversized write leaves nothing', async () => {
    const store = makeStore();
    const key = 'studies/1.2.6/1.2.6.1/1.2.6.1.1.dcm';
    for (const content of ['old copy', 'new copy, longer']) {
      const w = store.stage();
      w.stream.write(Buffer.from(content));
      await finish(w.stream);
      await w.commit(key);
    }
    assert.equal((await store.get(key)).toString(), 'new copy, longer');
    assert.equal((await collect(store.list('studies/1.2.6/'))).length, 1);

    const dropped = store.stage();
    dropped.stream.write(Buffer.from('never committed'));
    await finish(dropped.stream);
    await dropped.discard();
    await dropped.discard();
    await assert.rejects(dropped.commit(key), /discarded/);

    const midway = store.stage();
    midway.stream.write(randomBytes(1024));
    await midway.discard(); // while still writing

    const tooBig = store.stage(10 * 1024);
    const failed = new Promise<Error>((resolve) => tooBig.stream.once('error', resolve));
    tooBig.stream.write(randomBytes(8 * 1024));
    tooBig.stream.write(randomBytes(8 * 1024));
    assert.ok((await failed) instanceof InstanceTooLargeError);
    await tooBig.discard();

    assert.deepEqual(
      (await rawKeys()).filter((k) => k.includes('staging/')),
      [],
      'no staging object is left behind',
    );
    assert.equal((await store.get(key)).toString(), 'new copy, longer');
    await store.delete(key);
  });

  test('a 64 MiB instance goes up in 5 MiB parts with flat memory, paced through flow control', async () => {
    const key = 'studies/1.2.7/1.2.7.1/1.2.7.1.1.dcm';
    const { stdout } = await execFileP(
      process.execPath,
      [
        '--expose-gc',
        '--import',
        'tsx',
        path.join(import.meta.dirname, '../../helpers/s3-upload-rss.ts'),
        server.endpoint,
        BUCKET,
        path.join(work, 'cache'),
        '64',
        key,
      ],
      { cwd: path.resolve(import.meta.dirname, '../../..'), timeout: 120_000 },
    );
    const r = JSON.parse(stdout.trim().split('\n').pop()!) as {
      peakRss: number;
      peakArrayBuffers: number;
      pauses: number;
      counts: Record<string, number>;
      md5: string;
    };
    console.log(
      `multipart 64 MiB: live RSS +${(r.peakRss / MiB).toFixed(1)} MiB, ArrayBuffers ` +
        `+${(r.peakArrayBuffers / MiB).toFixed(1)} MiB, ${r.pauses} pauses, requests ${JSON.stringify(r.counts)}`,
    );
    assert.ok(r.pauses > 0, 'the source was paused while the upload was behind');
    // About (queueSize + 2) parts of 5 MiB and two 1 MiB stream buffers (measured: ~30 MiB of buffers,
    // RSS +36 MiB; without the backpressure 64 MiB and +125 MiB): well below what was written.
    assert.ok(r.peakArrayBuffers < 44 * MiB, `buffers held ${(r.peakArrayBuffers / MiB).toFixed(1)} MiB`);
    assert.ok(r.peakRss < 56 * MiB, `RSS grew by ${(r.peakRss / MiB).toFixed(1)} MiB`);
    assert.deepEqual(r.counts, {
      CompleteMultipartUpload: 1,
      CopyObject: 1,
      CreateMultipartUpload: 1,
      DeleteObject: 1,
      UploadPart: Math.ceil(64 / 5),
    });
    const store = makeStore();
    assert.equal((await store.stat(key))?.size, 64 * MiB);
    const copy = await store.localCopy(key);
    assert.equal(createHash('md5').update(readFileSync(copy.path)).digest('hex'), r.md5);
    await copy.release();
    await store.delete(key);
  });

  test('multipart part buffers come from a pool reused across writes, and the parts read back in order', async () => {
    const store = makeStore();
    const key = 'studies/1.2.8/1.2.8.1/1.2.8.1.1.dcm';
    // 3 full parts and a short one, written in chunks that straddle the part boundaries.
    const bytes = randomBytes(3 * 5 * MiB + 123_457);
    const upload = async (): Promise<void> => {
      const staged = store.stage();
      for (let i = 0; i < bytes.length; i += 100_003) staged.stream.write(bytes.subarray(i, i + 100_003));
      await finish(staged.stream);
      await staged
        .read(5 * MiB - 10, 20)
        .then((b) => assert.deepEqual(b, bytes.subarray(5 * MiB - 10, 5 * MiB + 10)));
      await staged.commit(key);
    };
    await upload();
    const first = store.partBufferCounts();
    assert.ok(
      first.allocated >= 2 && first.allocated <= 3,
      `allocated ${first.allocated} (queueSize 2 + 1 at most)`,
    );
    assert.equal(first.idle, first.allocated, 'every part buffer went back to the pool');
    assert.deepEqual(await store.get(key), bytes, 'the parts were joined in order');
    const counts = store.requestCounts();
    assert.equal(counts.UploadPart, 4);
    assert.equal(counts.CreateMultipartUpload, 1);
    assert.equal(counts.CompleteMultipartUpload, 1);

    await upload();
    assert.deepEqual(store.partBufferCounts(), first, 'the second write allocated no part buffer');
    assert.deepEqual(await store.get(key), bytes);

    // Exactly one part: still a single PutObject, with a pooled buffer.
    const exact = store.stage();
    exact.stream.write(bytes.subarray(0, 5 * MiB));
    await finish(exact.stream);
    await exact.commit(key);
    assert.equal(store.requestCounts().PutObject, 1);
    assert.deepEqual(await store.get(key), bytes.subarray(0, 5 * MiB));

    // A write discarded in the middle of its multipart upload gives its buffers back and leaves nothing.
    const dropped = store.stage();
    dropped.stream.write(bytes.subarray(0, 12 * MiB));
    await new Promise((r) => setTimeout(r, 200));
    await dropped.discard();
    assert.deepEqual(store.partBufferCounts(), first, 'no buffer lost or added');
    assert.deepEqual(
      (await rawKeys()).filter((k) => k.includes('staging/')),
      [],
      'no staging object left',
    );
    assert.equal(store.requestCounts().AbortMultipartUpload, 1, 'the multipart upload was aborted');
    await store.delete(key);
  });

  test('retire removes a copy written by the cut-off, keeps a later one, and says absent', async () => {
    const store = makeStore();
    const key = 'studies/1.2.8/1.2.8.1/1.2.8.1.1.dcm';
    const w = store.stage();
    w.stream.write(Buffer.from('instance'));
    await finish(w.stream);
    await w.commit(key);
    const written = (await store.stat(key))!.modifiedAt;
    assert.equal(await store.retire(key, written - 1), 'kept', 'a copy written after the cut-off stays');
    assert.equal(await store.get(key).then((b) => b.toString()), 'instance');
    assert.equal(await store.retire(key, written), 'removed');
    assert.equal(await store.stat(key), undefined);
    assert.equal(await store.retire(key, Date.now()), 'absent');

    // An object another tool wrote (no write-time metadata): its LastModified counts.
    const client = rawClient();
    await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: `site-a/${key}`, Body: 'foreign' }));
    client.destroy();
    const foreign = (await store.stat(key))!.modifiedAt;
    assert.equal(foreign % 1000, 0, 'LastModified has whole seconds');
    assert.equal(await store.retire(key, foreign - 1000), 'kept');
    assert.equal(await store.retire(key, foreign), 'removed');
  });

  test('cleanupStaging removes old staging objects only, never committed ones', async () => {
    const store = makeStore();
    const key = 'studies/1.2.9/1.2.9.1/1.2.9.1.1.dcm';
    await store.put(key, Buffer.from('kept'));
    const crashed = store.stage(); // finished, then the process "died" before commit or discard
    crashed.stream.write(Buffer.from('orphan'));
    await finish(crashed.stream);
    assert.equal(await store.cleanupStaging(3_600_000), 0, 'a young staging object stays');
    assert.equal((await rawKeys()).filter((k) => k.startsWith('site-a/staging/')).length, 1);
    await new Promise((r) => setTimeout(r, 2_100)); // LastModified has whole seconds
    await putSentinel(); // young: stays
    assert.equal(await store.cleanupStaging(1_000), 1);
    assert.equal((await rawKeys()).length, 1, 'the committed object stays');
    assert.deepEqual(
      (await rawKeys()).filter((k) => k.includes('staging/')),
      [],
    );
    assert.equal((await store.get(key)).toString(), 'kept');
    await store.delete(key);
  });

  test('deletePrefix deletes in batches of 1000', async () => {
    const store = makeStore();
    const keys = Array.from({ length: 1003 }, (_, i) => `outbox/1.2.10/1.2.10.${i + 1}.dcm`);
    for (let i = 0; i < keys.length; i += 32)
      await Promise.all(keys.slice(i, i + 32).map((k) => store.put(k, Buffer.from('x'))));
    // Each DeleteObjects carries Content-MD5 of its body (older MinIO and Ceph insist on it).
    const md5s: boolean[] = [];
    store.client.middlewareStack.add(
      (next, context) => (args) => {
        const req = args.request as { headers: Record<string, string>; body: string };
        if (context.commandName === 'DeleteObjectsCommand')
          md5s.push(req.headers['content-md5'] === createHash('md5').update(req.body).digest('base64'));
        return next(args);
      },
      { step: 'finalizeRequest', priority: 'low', name: 'testContentMd5' },
    );
    const before = store.operationCounts();
    assert.equal(await store.deletePrefix('outbox/1.2.10/'), keys.length);
    assert.ok(md5s.length >= 2 && md5s.every(Boolean), `Content-MD5 right: ${JSON.stringify(md5s)}`);
    const after = store.operationCounts();
    assert.equal(after.DeleteObjects! - (before.DeleteObjects ?? 0), 2);
    assert.equal(after.ListObjectsV2! - (before.ListObjectsV2 ?? 0), 2);
    assert.deepEqual(await collect(store.list('outbox/1.2.10/')), []);
  });

  test('two gateways sharing the bucket write concurrently without clashing', async () => {
    const a = makeStore();
    const b = makeStore();
    const writes = Array.from({ length: 16 }, (_, i) => {
      const store = i % 2 === 0 ? a : b;
      return (async () => {
        const w = store.stage();
        w.stream.write(Buffer.from(`copy ${i}`));
        await finish(w.stream);
        await w.commit(`studies/1.2.11/1.2.11.1/1.2.11.1.${i % 4}.dcm`);
      })();
    });
    await Promise.all(writes);
    const listed = await collect(a.list('studies/1.2.11/'));
    assert.equal(listed.length, 4);
    for (const o of listed) assert.match((await b.get(o.key)).toString(), /^copy \d+$/);
    assert.deepEqual(
      (await rawKeys()).filter((k) => k.includes('staging/')),
      [],
    );
    await a.deletePrefix('studies/1.2.11/');
  });

  test('requests per stored instance and per SR, from ingest to retention (the docs/scale-out.md figures)', async () => {
    const store = makeStore();
    const diff = (before: Record<string, number>) => {
      const out: Record<string, number> = {};
      for (const [op, n] of Object.entries(store.operationCounts()))
        if (n - (before[op] ?? 0) > 0) out[op] = n - (before[op] ?? 0);
      return out;
    };
    // Ingest: staged, header parsed from the head (no request), committed.
    let mark = store.operationCounts();
    const key = 'studies/1.2.14/1.2.14.1/1.2.14.1.1.dcm';
    const w = store.stage();
    w.stream.write(randomBytes(300 * 1024));
    await finish(w.stream);
    await w.read(0, 4096);
    await w.commit(key);
    const ingest = diff(mark);
    assert.deepEqual(ingest, { CopyObject: 1, DeleteObject: 1, PutObject: 1 });
    // A header longer than the 64 KiB head costs one ranged GET more.
    mark = store.operationCounts();
    const long = store.stage();
    long.stream.write(randomBytes(300 * 1024));
    await finish(long.stream);
    await long.read(60 * 1024, 16 * 1024);
    await long.discard();
    assert.deepEqual(diff(mark), { DeleteObject: 1, GetObject: 1, PutObject: 1 });
    // Inference reads it once (a local copy for the decoder); retention retires it.
    mark = store.operationCounts();
    const copy = await store.localCopy(key);
    await copy.release();
    const read = diff(mark);
    assert.deepEqual(read, { GetObject: 1 });
    mark = store.operationCounts();
    assert.equal(await store.retire(key, Date.now()), 'removed');
    const retire = diff(mark);
    assert.deepEqual(retire, { DeleteObject: 1, HeadObject: 1 });
    // An SR: written to the outbox, read for each delivery, the study's outbox removed when done.
    mark = store.operationCounts();
    await store.put('outbox/1.2.14/1.2.14.99.dcm', randomBytes(20 * 1024));
    const srWrite = diff(mark);
    mark = store.operationCounts();
    await store.get('outbox/1.2.14/1.2.14.99.dcm');
    const srDeliver = diff(mark);
    mark = store.operationCounts();
    assert.equal(await store.deletePrefix('outbox/1.2.14/'), 1);
    const outboxGone = diff(mark);
    assert.deepEqual(srWrite, { PutObject: 1 });
    assert.deepEqual(srDeliver, { GetObject: 1 });
    assert.deepEqual(outboxGone, { DeleteObjects: 1, ListObjectsV2: 1 });
    console.log(JSON.stringify({ ingest, read, retire, srWrite, srDeliver, outboxGone }));
  });

  test('createS3ObjectStore builds the store from the configuration, with the cache under dataDir', async () => {
    const store = createS3ObjectStore({ dataDir: work, storage: { s3: options({ prefix: '' }) } });
    stores.push(store);
    await store.init();
    await store.put('outbox/1.2.12/1.2.12.1.dcm', Buffer.from('no prefix'));
    assert.ok((await rawKeys()).includes('outbox/1.2.12/1.2.12.1.dcm'));
    const copy = await store.localCopy('outbox/1.2.12/1.2.12.1.dcm');
    assert.equal(path.dirname(copy.path), path.join(work, 'cache'));
    await copy.release();
    await store.delete('outbox/1.2.12/1.2.12.1.dcm');
  });
});

describe('S3ObjectStore failures an operator understands', () => {
  test('a missing bucket: check(), init() and writes say so', async () => {
    const store = makeStore({ bucket: 'no-such-bucket' });
    for (const op of [
      () => store.check(),
      () => store.init(),
      () => store.put('outbox/1.2/1.2.1.dcm', Buffer.from('x')),
      // A HEAD's 404 has no body: the store checks the bucket before saying "absent".
      () => store.stat('outbox/1.2/1.2.1.dcm'),
      () => store.retire('outbox/1.2/1.2.1.dcm', Date.now()),
      () => collect(store.list('outbox/')),
    ])
      await assert.rejects(op(), /S3 bucket 'no-such-bucket' does not exist at http:\/\/127\.0\.0\.1:\d+/);
    const w = store.stage();
    w.stream.write(Buffer.from('x'));
    await assert.rejects(finish(w.stream), /bucket 'no-such-bucket' does not exist/);
    await w.discard();
  });

  test('an unknown access key: access denied, and the secret never appears in the message', async () => {
    // s3rver checks the access key id but not the signature; MinIO and S3 answer a wrong secret with
    // SignatureDoesNotMatch, described the same way (access denied).
    const secret = 'wrong-secret-value-1234';
    const store = makeStore({ accessKeyId: 'NOT-A-KEY', secretAccessKey: secret });
    for (const op of [
      () => store.check(),
      () => store.put('outbox/1.2/1.2.1.dcm', Buffer.from('x')),
      () => store.stat('outbox/1.2/1.2.1.dcm').then(() => undefined),
      () => collect(store.list('outbox/')).then(() => undefined),
    ]) {
      const err = rejection((await timed(op())).result);
      assert.match(err.message, /access denied/);
      assert.ok(!err.message.includes(secret));
    }
    const err = rejection((await timed(store.put('outbox/1.2/1.2.1.dcm', Buffer.from('x')))).result);
    assert.match(err.message, /the access key id is not known to the server \(InvalidAccessKeyId\)/);
  });

  test('server down: every operation rejects within seconds, none hangs', async () => {
    const store = makeStore();
    await store.put('outbox/1.2.13/1.2.13.1.dcm', Buffer.from('x'));
    await server.stop();
    try {
      const w = store.stage();
      w.stream.write(Buffer.from('instance'));
      const ops: [string, () => Promise<unknown>][] = [
        ['check', () => store.check()],
        ['put', () => store.put('outbox/1.2.13/1.2.13.2.dcm', Buffer.from('x'))],
        ['get', () => store.get('outbox/1.2.13/1.2.13.1.dcm')],
        ['stat', () => store.stat('outbox/1.2.13/1.2.13.1.dcm')],
        ['list', () => collect(store.list('outbox/'))],
        ['retire', () => store.retire('outbox/1.2.13/1.2.13.1.dcm', Date.now())],
        ['staged write', () => finish(w.stream)],
      ];
      for (const [name, op] of ops) {
        const { ms, result } = await timed(op());
        const err = rejection(result);
        assert.match(err.message, /unreachable \(ECONNREFUSED: connection refused\)/, name);
        assert.ok(ms < 5_000, `${name} took ${ms.toFixed(0)} ms`);
      }
      await w.discard();
    } finally {
      await server.start();
    }
    assert.equal((await store.get('outbox/1.2.13/1.2.13.1.dcm')).toString(), 'x', 'back once the server is');
    await store.deletePrefix('outbox/1.2.13/');
  });

  test('server gone in the middle of a multipart upload: the stream fails, the source is resumed', async () => {
    const store = makeStore();
    let paused = false;
    let resumeWaiter: (() => void) | undefined;
    const flow = {
      pause: () => void (paused = true),
      resume: () => {
        paused = false;
        resumeWaiter?.();
      },
    };
    const staged = store.stage(undefined, flow);
    const failed = new Promise<Error>((resolve) => staged.stream.once('error', resolve));
    let sent = 0;
    let stopped: Promise<void> | undefined;
    let failedAt = 0;
    try {
      for (; sent < 64 * MiB && !staged.stream.destroyed; sent += 256 * 1024) {
        if (sent === 12 * MiB) {
          stopped = server.stop();
          failedAt = performance.now();
        }
        if (paused) await new Promise<void>((r) => (resumeWaiter = r));
        staged.stream.write(randomBytes(256 * 1024));
      }
      const err = await failed;
      const ms = performance.now() - failedAt;
      console.log(`mid-upload outage surfaced in ${ms.toFixed(0)} ms: ${err.message}`);
      assert.match(err.message, /unreachable|did not answer|socket hang up|ECONNRESET|EPIPE/);
      assert.ok(ms < 10_000, `the failure took ${ms.toFixed(0)} ms to surface`);
      assert.ok(sent < 64 * MiB, 'the source stopped sending once the stream failed');
      assert.equal(paused, false, 'the source is not left paused');
      await staged.discard();
    } finally {
      await stopped;
      await server.start();
    }
  });

  test('a server that accepts connections but never answers: rejected after the request timeout', async () => {
    const sockets = new Set<Socket>();
    const silent: Server = createServer((s) => {
      sockets.add(s);
      s.on('error', () => undefined);
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as { port: number }).port;
    try {
      const store = makeStore({
        endpoint: `http://127.0.0.1:${port}`,
        requestTimeoutMs: 500,
        maxAttempts: 2,
      });
      for (const op of [() => store.check(), () => store.put('outbox/1.2/1.2.1.dcm', Buffer.from('x'))]) {
        const { ms, result } = await timed(op());
        assert.match(rejection(result).message, /did not answer in time/);
        assert.ok(ms < 5_000, `took ${ms.toFixed(0)} ms`);
      }
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });

  test('the local cache keeps nothing of a failed download', async () => {
    const store = makeStore();
    await assert.rejects(store.localCopy('outbox/1.2/1.2.404.dcm'), ObjectNotFoundError);
    const left = existsSync(path.join(work, 'cache'))
      ? readdirSync(path.join(work, 'cache')).filter((f) => f.endsWith('1.2.404.dcm'))
      : [];
    assert.deepEqual(left, []);
  });
});
