// Where one C-STORE's time goes: the real DIMSE server, spool, study index and completion re-arm in this
// process (same code as the gateway), fed by dcmtk storescu with TCP_NODELAY=1 over one association or
// several. The methods of each step are wrapped with timers; the table gives the median and mean
// milliseconds per instance (over several associations the steps of different instances overlap).
//
//   node --initial-old-space-size=128 --import tsx bench/ingest/profile.ts [instances=200] [associations=1]
//   node --initial-old-space-size=128 --cpu-prof --import tsx bench/ingest/profile.ts   # plus a CPU profile
// (the V8 flag is the gateway's own, src/util/node-flags.ts; the script refuses to run without it)
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import { InstanceAcceptor } from '../../src/ingest/accept.ts';
import { PDataReceiver } from '../../src/ingest/dimse/pdata-receiver.ts';
import { startDimseServer } from '../../src/ingest/dimse/server.ts';
import { createInstanceRecorder } from '../../src/pipeline/record-instance.ts';
import { createIngestRedis } from '../../src/pipeline/redis.ts';
import { StudyIndex } from '../../src/pipeline/study-index.ts';
import { Spool, TempFileStream } from '../../src/storage/spool.ts';
import { FilesystemObjectStore } from '../../src/storage/filesystem-store.ts';
import { STAGED_SEALED } from '../../src/storage/object-store.ts';
import { NODE_FLAGS } from '../../src/util/node-flags.ts';
import { synthesizeCtSeries } from './synth.ts';

// The gateway's own V8 flags, or the figures are not the gateway's (its collector worked 10× harder without).
if (!NODE_FLAGS.every((f) => process.execArgv.includes(f))) {
  throw new Error(
    `run as: node ${NODE_FLAGS.join(' ')} --import tsx bench/ingest/profile.ts [instances] [associations]`,
  );
}
const INSTANCES = Number(process.argv[2] ?? 200);
const ASSOCIATIONS = Number(process.argv[3] ?? 1);
const REDIS_URL = process.env.GATEWAY_REDIS_URL ?? 'redis://127.0.0.1:6379';

const spans = new Map<string, number[]>();
const note = (name: string, ms: number): void => {
  const list = spans.get(name) ?? [];
  list.push(ms);
  spans.set(name, list);
};
const now = (): number => performance.now();
const ROW_ORDER = [
  'response → next data set',
  '  of which the sender',
  '  of which ours',
  'file write',
  'file fdatasync',
  'header read',
  'first fragment → file durable',
  'rename + directory fsync',
  'Redis index write',
  'completion re-arm',
  'accept total',
  '(alone) rename',
  '(alone) directory fsync',
];
const rank = (name: string): number => {
  const i = ROW_ORDER.findIndex((prefix) => name.startsWith(prefix));
  return i < 0 ? ROW_ORDER.length : i;
};

/** Wraps an async method of a prototype with a timer. */
function timeAsync(proto: object, method: string, name: string): void {
  const target = proto as Record<string, (...a: unknown[]) => Promise<unknown>>;
  const original = target[method]!;
  target[method] = async function (this: unknown, ...args: unknown[]) {
    const t0 = now();
    try {
      return await original.apply(this, args);
    } finally {
      note(name, now() - t0);
    }
  };
}

// File write: every _write / _writev until the last; fdatasync: _final.
const perStream = new WeakMap<object, { created: number; writing: number }>();
{
  const proto = TempFileStream.prototype as unknown as Record<string, (...a: unknown[]) => void>;
  const write = proto._write!;
  proto._write = function (this: object, chunk: unknown, enc: unknown, done: unknown) {
    const t0 = now();
    const s = perStream.get(this) ?? { created: t0, writing: 0 };
    perStream.set(this, s);
    write.call(this, chunk, enc, (err?: Error | null) => {
      s.writing += now() - t0;
      (done as (e?: Error | null) => void)(err);
    });
  };
  // Corked data sets (pdata-receiver.ts) reach the file through _writev.
  const writev = proto._writev!;
  proto._writev = function (this: object, chunks: unknown, done: unknown) {
    const t0 = now();
    const s = perStream.get(this) ?? { created: t0, writing: 0 };
    perStream.set(this, s);
    writev.call(this, chunks, (err?: Error | null) => {
      s.writing += now() - t0;
      (done as (e?: Error | null) => void)(err);
    });
  };
  const final = proto._final!;
  proto._final = function (this: object, done: unknown) {
    const t0 = now();
    const s = perStream.get(this);
    if (s !== undefined) note('file write (all chunks)', s.writing);
    final.call(this, (err?: Error | null) => {
      note('file fdatasync', now() - t0);
      (done as (e?: Error | null) => void)(err);
    });
  };
}
timeAsync(Spool.prototype, 'commitFile', 'rename + directory fsync (commit)');
timeAsync(StudyIndex.prototype, 'recordInstance', 'Redis index write (MULTI)');
timeAsync(Queue.prototype, 'add', 'completion re-arm (BullMQ add, Lua)');
timeAsync(InstanceAcceptor.prototype, 'accept', 'accept total (parse, commit, index, re-arm)');

// Receive: from the first dataset fragment (temp stream created) to the end of the data set; between
// instances: from one accept's end (response about to be sent) to the next instance's first fragment, split
// at the first bytes back (one association only): before them the sender's turn, after them ours (the
// command read, the store stream opened).
let lastAcceptEnd: number | undefined;
let awaitingSender = false;
let firstBytesBack: number | undefined;
{
  const proto = PDataReceiver.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  const feed = proto.feed!;
  proto.feed = function (this: unknown, ...args: unknown[]) {
    if (awaitingSender && lastAcceptEnd !== undefined && ASSOCIATIONS === 1) {
      awaitingSender = false;
      firstBytesBack = now();
      note('  of which the sender (response → first bytes back)', firstBytesBack - lastAcceptEnd);
    }
    return feed.apply(this, args);
  };
}
// Header parse: from the data set's last byte ('sealed', the fdatasync issued) to the header read early.
const sealedAt = new WeakMap<object, number>();
{
  const proto = InstanceAcceptor.prototype as unknown as Record<
    string,
    (...a: unknown[]) => Promise<unknown>
  >;
  const readHeaderEarly = proto.readHeaderEarly!;
  proto.readHeaderEarly = function (this: unknown, ...args: unknown[]) {
    const { stream } = args[0] as { stream: object };
    return readHeaderEarly.apply(this, args).then((early) => {
      const sealed = sealedAt.get(stream);
      if (sealed !== undefined) note('header read (during the fdatasync)', now() - sealed);
      return early;
    });
  };
}
{
  const proto = Spool.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  const create = proto.createTempWriteStream!;
  proto.createTempWriteStream = function (this: unknown, ...args: unknown[]) {
    const t = now();
    // Only meaningful with one association (with several, another's response comes in between).
    if (lastAcceptEnd !== undefined && ASSOCIATIONS === 1)
      note('response → next data set (sender + command)', t - lastAcceptEnd);
    if (firstBytesBack !== undefined)
      note('  of which ours (first bytes → store stream)', t - firstBytesBack);
    firstBytesBack = undefined;
    const result = create.apply(this, args) as { stream: TempFileStream };
    perStream.set(result.stream, { created: t, writing: 0 });
    result.stream.once('finish', () => note('first fragment → file durable', now() - t));
    result.stream.once(STAGED_SEALED, () => sealedAt.set(result.stream, now()));
    return result;
  };
  const acceptProto = InstanceAcceptor.prototype as unknown as Record<
    string,
    (...a: unknown[]) => Promise<unknown>
  >;
  const accept = acceptProto.accept!;
  acceptProto.accept = async function (this: unknown, ...args: unknown[]) {
    try {
      return await accept.apply(this, args);
    } finally {
      lastAcceptEnd = now();
      awaitingSender = true;
    }
  };
}

async function dirFsyncAlone(dir: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const f = path.join(dir, `r-${i}`);
    const h = await open(f, 'w');
    await h.close();
    const t0 = now();
    await rename(f, `${f}.moved`);
    note('(alone) rename', now() - t0);
    const t1 = now();
    const d = await open(dir, 'r');
    await d.sync();
    await d.close();
    note('(alone) directory fsync', now() - t1);
  }
}

const dir = await mkdtemp(path.join(tmpdir(), 'aigw-profile-'));
const prefix = `aigw-profile-${randomBytes(4).toString('hex')}`;
const redis = await createIngestRedis(REDIS_URL);
const queue = new Queue('study-complete', { connection: redis, prefix });
const store = new FilesystemObjectStore(path.join(dir, 'data'));
await store.init();
const server = await startDimseServer({
  aeTitle: 'PROFILE',
  host: '127.0.0.1',
  port: 0,
  maxPduLength: 262_144,
  store,
  dataDir: path.join(dir, 'data'),
  onStored: createInstanceRecorder({
    index: new StudyIndex(redis, prefix),
    studyCompleteQueue: queue as never,
    quietPeriodMs: 3_600_000,
  }),
});
try {
  const files = await synthesizeCtSeries({ dir: path.join(dir, 'series'), instances: INSTANCES + 20 });
  const sendOne = (list: string[]) =>
    new Promise<void>((resolve, reject) => {
      const child = spawn(
        'storescu',
        ['-aet', 'BENCH', '-aec', 'PROFILE', '127.0.0.1', String(server.port), ...list],
        { env: { ...process.env, TCP_NODELAY: '1' }, stdio: 'inherit' },
      );
      child.once('error', reject);
      child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`storescu ${code}`))));
    });
  /** The files over ASSOCIATIONS storescu processes at once; milliseconds for all of them. */
  const run = async (list: string[]) => {
    const groups: string[][] = Array.from({ length: ASSOCIATIONS }, () => []);
    list.forEach((f, i) => groups[i % ASSOCIATIONS]!.push(f));
    const t0 = now();
    await Promise.all(groups.filter((g) => g.length > 0).map(sendOne));
    return now() - t0;
  };
  await run(files.slice(0, 20)); // warm-up
  spans.clear();
  lastAcceptEnd = undefined;
  const ms = await run(files.slice(20));
  await dirFsyncAlone(await mkdtemp(path.join(dir, 'd-')), 100);
  const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)] ?? NaN;
  const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
  console.log(
    `\n${INSTANCES} instances over ${ASSOCIATIONS} association(s): ${(INSTANCES / (ms / 1000)).toFixed(1)} inst/s, ` +
      `${(ms / INSTANCES).toFixed(2)} ms per instance\n`,
  );
  console.log('| step | median ms | mean ms | count |\n| --- | ---: | ---: | ---: |');
  // An instance's steps in their order; the sub-rows under the row they split.
  const order = [...spans.keys()].sort((a, b) => rank(a) - rank(b));
  for (const name of order) {
    const list = spans.get(name)!;
    console.log(`| ${name} | ${median(list).toFixed(2)} | ${mean(list).toFixed(2)} | ${list.length} |`);
  }
} finally {
  await server.close();
  await queue.obliterate({ force: true }).catch(() => undefined);
  await queue.close();
  redis.disconnect();
  await rm(dir, { recursive: true, force: true });
}
