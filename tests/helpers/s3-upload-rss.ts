// Child process for the S3 multipart memory test (run with --expose-gc): streams SIZE_MIB of random bytes
// into a staged write the way dcmjs-dimse does (writes without looking at write()'s result, stopping only
// while flow control has paused it), commits it at KEY, and prints what memory the live objects held:
// the resident set and the ArrayBuffers after a full GC every 2 MiB written, above the baseline.
import { createHash, randomBytes } from 'node:crypto';
import { S3ObjectStore } from '../../src/storage/s3-store.ts';

const [endpoint, bucket, cacheDir, sizeMib, key] = process.argv.slice(2);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc || !endpoint || !bucket || !cacheDir || !sizeMib || !key)
  throw new Error('usage: node --expose-gc --import tsx s3-upload-rss.ts ENDPOINT BUCKET CACHE SIZE_MIB KEY');

const MiB = 1024 * 1024;
const store = new S3ObjectStore({
  bucket,
  endpoint,
  region: 'us-east-1',
  prefix: 'site-a/',
  accessKeyId: 'S3RVER',
  secretAccessKey: 'S3RVER',
  partSizeBytes: 5 * MiB,
  queueSize: 2,
  requestTimeoutMs: 10_000,
  connectTimeoutMs: 2_000,
  maxAttempts: 3,
  cacheDir,
});
const total = Number(sizeMib) * MiB;
const chunk = 256 * 1024;
let paused = false;
let pauses = 0;
let resumeWaiter: (() => void) | undefined;
const flow = {
  pause() {
    if (!paused) pauses++;
    paused = true;
  },
  resume() {
    paused = false;
    resumeWaiter?.();
  },
};

gc();
const base = process.memoryUsage();
let peakRss = 0;
let peakArrayBuffers = 0;
const sample = (): void => {
  gc();
  const m = process.memoryUsage();
  peakRss = Math.max(peakRss, m.rss - base.rss);
  peakArrayBuffers = Math.max(peakArrayBuffers, m.arrayBuffers - base.arrayBuffers);
};

const staged = store.stage(undefined, flow);
const md5 = createHash('md5');
for (let sent = 0; sent < total; sent += chunk) {
  if (paused) await new Promise<void>((r) => (resumeWaiter = r));
  const data = randomBytes(chunk);
  md5.update(data);
  staged.stream.write(data);
  if ((sent + chunk) % (2 * MiB) === 0) sample();
}
await new Promise<void>((resolve, reject) => {
  staged.stream.once('error', reject);
  staged.stream.once('finish', () => resolve());
  staged.stream.end();
});
sample();
await staged.commit(key);
const counts = store.requestCounts();
await store.close();
console.log(JSON.stringify({ peakRss, peakArrayBuffers, pauses, counts, md5: md5.digest('hex') }));
