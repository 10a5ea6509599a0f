import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { InvalidUidError } from '../../../src/dicom/uid.ts';
import { DirectorySyncs, InstanceTooLargeError, Spool } from '../../../src/storage/spool.ts';
import { STAGED_SEALED } from '../../../src/storage/object-store.ts';

async function withSpool(fn: (spool: Spool, dataDir: string) => Promise<void>): Promise<void> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'aigw-spool-'));
  try {
    const spool = new Spool(dataDir);
    await spool.init();
    try {
      await fn(spool, dataDir);
    } finally {
      await spool.close();
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}

async function tempWith(spool: Spool, content: string): Promise<string> {
  const { path: p, handle } = await spool.createTempFile();
  await handle.writeFile(content);
  await handle.close();
  return p;
}

/** Every file under dir, relative to it. */
async function allFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}

const KEY = { studyUid: '1.2.3', seriesUid: '1.2.3.4', sopInstanceUid: '1.2.3.4.5' };

test('commit moves the temp file to studies/<study>/<series>/<sop>.dcm', () =>
  withSpool(async (spool, dataDir) => {
    const tmp = await tempWith(spool, 'instance-1');
    assert.equal(path.dirname(tmp), path.join(dataDir, 'spool', 'tmp'));
    const final = await spool.commit(tmp, KEY);
    assert.equal(final, path.join(dataDir, 'spool', 'studies', '1.2.3', '1.2.3.4', '1.2.3.4.5.dcm'));
    assert.equal(final, spool.instancePath(KEY));
    assert.equal(await readFile(final, 'utf8'), 'instance-1');
    await assert.rejects(stat(tmp), { code: 'ENOENT' });
    assert.deepEqual(await readdir(spool.tmpDir), []);
  }));

test('commit strips UID padding from the path', () =>
  withSpool(async (spool) => {
    const tmp = await tempWith(spool, 'x');
    const final = await spool.commit(tmp, {
      studyUid: '1.2.3\0',
      seriesUid: '1.2.3.4 ',
      sopInstanceUid: '1.2.3.4.5',
    });
    assert.equal(final, spool.instancePath(KEY));
  }));

test('invalid UIDs are refused before any path exists, and nothing escapes the spool', () =>
  withSpool(async (spool, dataDir) => {
    const hostile = [
      '../../etc',
      '..',
      '1.2/../../x',
      '/etc/passwd',
      '1.2.3\\..\\x',
      '',
      '1..2',
      `1.${'2'.repeat(63)}`,
    ];
    for (const bad of hostile) {
      for (const field of ['studyUid', 'seriesUid', 'sopInstanceUid'] as const) {
        const tmp = await tempWith(spool, 'hostile');
        await assert.rejects(spool.commit(tmp, { ...KEY, [field]: bad }), InvalidUidError);
        // The temp file is untouched (the caller discards it) and no directory was created.
        assert.equal(await readFile(tmp, 'utf8'), 'hostile');
        await spool.discard(tmp);
      }
      assert.throws(() => spool.instancePath({ ...KEY, studyUid: bad }), InvalidUidError);
    }
    assert.deepEqual(await readdir(spool.studiesDir), []);
    // Nothing at all was written next to or above the spool.
    assert.deepEqual((await readdir(dataDir)).sort(), ['spool']);
    assert.deepEqual(await allFiles(dataDir), []);
  }));

test('commit refuses a temp path outside the spool tmp directory', () =>
  withSpool(async (spool, dataDir) => {
    const outside = path.join(dataDir, 'elsewhere.part');
    await writeFile(outside, 'x');
    await assert.rejects(spool.commit(outside, KEY), /not a file in/);
    await assert.rejects(
      spool.commit(path.join(spool.tmpDir, '..', '..', 'elsewhere.part'), KEY),
      /not a file in/,
    );
    assert.equal(await readFile(outside, 'utf8'), 'x');
  }));

test('a resent instance replaces the earlier file', () =>
  withSpool(async (spool) => {
    const first = await spool.commit(await tempWith(spool, 'first version'), KEY);
    const second = await spool.commit(await tempWith(spool, 'second'), KEY);
    assert.equal(second, first);
    assert.equal(await readFile(second, 'utf8'), 'second');
    assert.deepEqual(await spool.listInstances(KEY.studyUid), [{ seriesUid: KEY.seriesUid, paths: [first] }]);
  }));

test('listStudies and listInstances group by study and series, ignoring foreign names', () =>
  withSpool(async (spool) => {
    const keys = [
      { studyUid: '1.2.3', seriesUid: '1.2.3.2', sopInstanceUid: '1.2.3.2.1' },
      { studyUid: '1.2.3', seriesUid: '1.2.3.1', sopInstanceUid: '1.2.3.1.2' },
      { studyUid: '1.2.3', seriesUid: '1.2.3.1', sopInstanceUid: '1.2.3.1.1' },
      { studyUid: '9.8', seriesUid: '9.8.1', sopInstanceUid: '9.8.1.1' },
    ];
    for (const k of keys) await spool.commit(await tempWith(spool, k.sopInstanceUid), k);
    // Junk that reconciliation must not mistake for instances.
    await writeFile(path.join(spool.studiesDir, 'notes.txt'), 'x');
    await writeFile(path.join(spool.studiesDir, '1.2.3', '1.2.3.1', 'stray.tmp'), 'x');
    await writeFile(path.join(spool.studiesDir, '1.2.3', '1.2.3.1', 'bad..uid.dcm'), 'x');

    assert.deepEqual(await spool.listStudies(), ['1.2.3', '9.8']);
    assert.deepEqual(await spool.listInstances('1.2.3'), [
      { seriesUid: '1.2.3.1', paths: [spool.instancePath(keys[2]!), spool.instancePath(keys[1]!)] },
      { seriesUid: '1.2.3.2', paths: [spool.instancePath(keys[0]!)] },
    ]);
    assert.deepEqual(await spool.listInstances('7.7'), []);
    await assert.rejects(spool.listInstances('../1.2.3'), InvalidUidError);

    await spool.removeStudy('1.2.3');
    assert.deepEqual(await spool.listStudies(), ['9.8']);
    await assert.rejects(spool.removeStudy('..'), InvalidUidError);
    assert.deepEqual(await spool.listStudies(), ['9.8']);
  }));

test('cleanupTemp removes stale temp files only', () =>
  withSpool(async (spool) => {
    const stale = await tempWith(spool, 'old');
    const old = new Date(Date.now() - 3_600_000);
    await utimes(stale, old, old);
    const fresh = await tempWith(spool, 'new');
    const committed = await spool.commit(await tempWith(spool, 'kept'), KEY);

    assert.equal(await spool.cleanupTemp(60_000), 1);
    await assert.rejects(stat(stale), { code: 'ENOENT' });
    assert.equal(await readFile(fresh, 'utf8'), 'new');

    assert.equal(await spool.cleanupTemp(0), 1);
    assert.deepEqual(await readdir(spool.tmpDir), []);
    assert.equal(await readFile(committed, 'utf8'), 'kept');
  }));

test('the synchronous temp write stream fsyncs and commits', () =>
  withSpool(async (spool) => {
    const { path: tmp, stream } = spool.createTempWriteStream();
    const closed = new Promise((resolve, reject) => {
      stream.once('close', () => resolve(undefined));
      stream.once('error', reject);
    });
    stream.write('streamed ');
    stream.end('data');
    await closed;
    const final = await spool.commit(tmp, KEY, { alreadySynced: true });
    assert.equal(await readFile(final, 'utf8'), 'streamed data');
  }));

test('discard ignores missing files but refuses paths outside tmp', () =>
  withSpool(async (spool, dataDir) => {
    await spool.discard(spool.newTempPath());
    await assert.rejects(spool.discard(path.join(dataDir, 'x')), /not a file in/);
  }));

test('the temp write stream stops at maxBytes, and pauses its source while the disk is behind', () =>
  withSpool(async (spool) => {
    const { stream } = spool.createTempWriteStream(10);
    const failed = new Promise<Error>((resolve) => stream.once('error', resolve));
    stream.write(Buffer.alloc(6));
    stream.write(Buffer.alloc(6));
    const err = await failed;
    assert.ok(err instanceof InstanceTooLargeError, String(err));

    const flow = { paused: 0, resumed: 0 };
    const { stream: paced } = spool.createTempWriteStream(Number.MAX_SAFE_INTEGER, {
      pause: () => flow.paused++,
      resume: () => flow.resumed++,
    });
    const big = Buffer.alloc(5 * 1024 * 1024);
    assert.equal(paced.write(big), false, 'over the high-water mark at once');
    assert.equal(flow.paused, 1);
    await new Promise((resolve) => paced.once('drain', resolve));
    assert.ok(flow.resumed >= 1);
    await new Promise((resolve) => paced.end(resolve));
    assert.equal(paced.bytesWritten, big.length);
  }));

test('chunks queued behind a write go out in one writev: content, head and size as written, limit kept', () =>
  withSpool(async (spool) => {
    const { path: tmp, stream } = spool.createTempWriteStream(1_000_000);
    const calls = { writev: 0 };
    const original = stream._writev!.bind(stream);
    stream._writev = (chunks, done) => {
      calls.writev++;
      original(chunks, done);
    };
    const parts = Array.from({ length: 40 }, (_, i) => Buffer.alloc(100 + i, i));
    // The first write runs alone; the 39 written while it runs queue up and go out together.
    for (const p of parts) stream.write(p);
    await new Promise((resolve, reject) => {
      stream.once('error', reject);
      stream.end(resolve);
    });
    assert.ok(calls.writev >= 1, 'writev used');
    const expected = Buffer.concat(parts);
    assert.ok((await readFile(tmp)).equals(expected));
    assert.equal(stream.bytesWritten, expected.length);
    assert.ok(stream.head.equals(expected), 'the head: every byte, as the file is under 64 KiB');

    const { stream: small } = spool.createTempWriteStream(1000);
    const failed = new Promise<Error>((resolve) => small.once('error', resolve));
    for (let i = 0; i < 5; i++) small.write(Buffer.alloc(300));
    assert.ok((await failed) instanceof InstanceTooLargeError);
  }));

/** This process's descriptors open on a path under dir. */
async function fdsUnder(dir: string): Promise<number> {
  let n = 0;
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (target.startsWith(dir)) n++;
  }
  return n;
}

test('directory syncs keep the directory open, but never sync a removed one in place of a new one', () =>
  withSpool(async (_spool, dataDir) => {
    const syncs = new DirectorySyncs();
    const dir = path.join(dataDir, 'series');
    await mkdir(dir);
    await syncs.sync(dir);
    await syncs.sync(dir);
    assert.equal(syncs.opened, 1, 'the second sync used the kept descriptor');
    // Retention removed the series, a new instance made it again: the kept descriptor is the old directory.
    await rm(dir, { recursive: true });
    await mkdir(dir);
    await syncs.sync(dir);
    assert.equal(syncs.opened, 2, 'the new directory was opened and synced');
    await syncs.sync(dir);
    assert.equal(syncs.opened, 2);
    // A directory that is gone fails the sync (the caller's rename cannot have gone into it).
    await rm(dir, { recursive: true });
    await assert.rejects(syncs.sync(dir), { code: 'ENOENT' });
    // At most 32 directories stay open; the least recently used are closed.
    const many = Array.from({ length: 40 }, (_, i) => path.join(dataDir, `d${i}`));
    for (const d of many) await mkdir(d);
    // One after another: concurrent opens finish in any order, and the least recently used must be d0.
    for (const d of many) await syncs.sync(d);
    assert.equal(await fdsUnder(dataDir), 32);
    await syncs.sync(many[0]!);
    assert.equal(syncs.opened, 2 + 40 + 1, 'an evicted directory is opened again');
    assert.equal(await fdsUnder(dataDir), 32);
  }));

test('kept directory descriptors are closed once idle', () =>
  withSpool(async (_spool, dataDir) => {
    const syncs = new DirectorySyncs(50);
    const dirs = Array.from({ length: 3 }, (_, i) => path.join(dataDir, `s${i}`));
    for (const d of dirs) await mkdir(d);
    await Promise.all(dirs.map((d) => syncs.sync(d)));
    assert.equal(await fdsUnder(dataDir), 3);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(await fdsUnder(dataDir), 0, 'a spool at rest holds no directory open');
    await syncs.sync(dirs[0]!);
    assert.equal(syncs.opened, 4);
  }));

test('a temp file written across the in-place limit (first 64 KiB in place, the rest in the pool) is whole', () =>
  withSpool(async (spool) => {
    const { path: tmp, stream } = spool.createTempWriteStream(10 * 1024 * 1024);
    const parts = Array.from({ length: 48 }, (_, i) => Buffer.alloc(65_536 + i, i));
    for (const [i, p] of parts.entries()) {
      stream.write(p);
      if (i % 5 === 0) await new Promise((r) => setImmediate(r));
    }
    await new Promise((resolve, reject) => {
      stream.once('error', reject);
      stream.end(resolve);
    });
    assert.ok((await readFile(tmp)).equals(Buffer.concat(parts)));
  }));

test("a temp stream says 'sealed' once it has every byte, before the sync that ends in 'finish'", () =>
  withSpool(async (spool) => {
    const { stream } = spool.createTempWriteStream();
    const events: string[] = [];
    stream.once(STAGED_SEALED, () => events.push(`sealed ${stream.bytesWritten}`));
    stream.once('finish', () => events.push('finish'));
    const parts = [Buffer.alloc(70_000, 1), Buffer.alloc(300_000, 2)];
    stream.write(parts[0]);
    stream.end(parts[1]);
    await new Promise((r) => stream.once('finish', r));
    assert.deepEqual(events, ['sealed 370000', 'finish']);
    stream.destroy();
  }));
