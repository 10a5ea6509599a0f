import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fstatSync, writeSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { TempFilePool } from '../../../src/storage/temp-file-pool.ts';
import { Spool } from '../../../src/storage/spool.ts';
import { waitFor } from '../../helpers/gateway.ts';

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-pool-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Waits until `cond` holds (the suite's own polling helper, which takes any defined value). */
const until = (cond: () => boolean, what: string) =>
  waitFor(what, async () => (cond() ? true : undefined), 5000);

/** Writes `text` as a temp stream's whole content and waits until it is durable. */
async function writeWhole(stream: Writable, text: string): Promise<void> {
  stream.end(Buffer.from(text));
  await new Promise((r) => stream.once('finish', r));
}

const poolIn = (dir: string, size = 3, maxAgeMs = 60_000) =>
  new TempFilePool({ dir, suffix: '.part', mode: 0o640, size, maxAgeMs });

test('the pool makes empty files ahead and hands each out once, open for writing', () =>
  withDir(async (dir) => {
    const pool = poolIn(dir);
    try {
      assert.equal(pool.take(), undefined, 'nothing is ready before the first fill');
      await until(() => pool.readyNames().length === 3, 'three ready files');
      assert.deepEqual((await readdir(dir)).sort(), pool.readyNames().sort());
      const taken = pool.take()!;
      assert.ok(taken, 'a ready file');
      assert.match(path.basename(taken.path), /\.part$/);
      assert.equal(fstatSync(taken.fd).size, 0, 'empty');
      assert.ok(!pool.holds(taken.path), 'handed out: no longer the pool’s');
      writeSync(taken.fd, 'data');
      assert.equal(await readFile(taken.path, 'utf8'), 'data');
      // Taking refills: the pool is back at three beside the one handed out.
      await until(() => pool.readyNames().length === 3, 'a refill');
      const second = pool.take()!;
      assert.notEqual(second.path, taken.path);
      assert.equal(((await stat(second.path)).mode & 0o777).toString(8), '640');
    } finally {
      await pool.close();
    }
  }));

test('a file that waited longer than maxAge is removed, never handed out', () =>
  withDir(async (dir) => {
    // Ages well above a loaded machine's scheduling delays: the fresh file below must still be fresh.
    const pool = poolIn(dir, 2, 1000);
    try {
      pool.fill();
      await until(() => pool.readyNames().length === 2, 'two ready files');
      const old = pool.readyNames().map((n) => path.join(dir, n));
      await new Promise((r) => setTimeout(r, 1100));
      assert.equal(pool.take(), undefined, 'both are too old');
      await until(() => pool.readyNames().length === 2, 'fresh files');
      for (const f of old) await assert.rejects(stat(f), { code: 'ENOENT' }, 'the stale file is gone');
      const fresh = pool.take();
      assert.ok(fresh && !old.includes(fresh.path), 'a fresh file');
    } finally {
      await pool.close();
    }
  }));

test('close removes the ready files, waits for the opens under way and makes no more', () =>
  withDir(async (dir) => {
    const pool = poolIn(dir, 4);
    pool.fill();
    await pool.close(); // the four opens were under way
    assert.deepEqual(await readdir(dir), []);
    assert.equal(pool.take(), undefined);
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(await readdir(dir), [], 'no file made after close');
  }));

test('when files cannot be made, take answers undefined and the pool tries again on the next take', () =>
  withDir(async (root) => {
    const dir = path.join(root, 'staging'); // not made yet: every open fails
    const pool = poolIn(dir, 2);
    try {
      pool.fill();
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(pool.take(), undefined);
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(pool.readyNames(), [], 'a failing pool does not spin');
      await mkdir(dir);
      assert.equal(pool.take(), undefined);
      await until(() => pool.readyNames().length === 2, 'files once the directory exists');
    } finally {
      await pool.close();
    }
  }));

test('the spool writes streams into ready files; its sweep and its listing leave the ready ones alone', () =>
  withDir(async (dataDir) => {
    const spool = new Spool(dataDir, { readyTempFiles: 2 });
    await spool.init();
    try {
      const first = spool.createTempWriteStream(); // none ready yet: opens its own
      await writeWhole(first.stream, 'one');
      await until(() => spool.readyTempFiles().length === 2, 'the spool’s ready files');
      const ready = spool.readyTempFiles().map((n) => path.join(spool.tmpDir, n));
      const second = spool.createTempWriteStream();
      assert.ok(ready.includes(second.path), 'the stream took a ready file');
      await writeWhole(second.stream, 'two');
      second.stream.destroy();
      assert.equal(await readFile(second.path, 'utf8'), 'two');
      await spool.commit(second.path, { studyUid: '1.2', seriesUid: '1.2.3', sopInstanceUid: '1.2.3.4' });
      // Even a sweep of everything keeps the files still waiting in the pool.
      await until(() => spool.readyTempFiles().length === 2, 'a refill');
      first.stream.destroy();
      assert.equal(await spool.cleanupTemp(0), 1, 'only the first stream’s abandoned file');
      assert.deepEqual((await readdir(spool.tmpDir)).sort(), spool.readyTempFiles().sort());
      await spool.close();
      assert.deepEqual(await readdir(spool.tmpDir), []);
    } finally {
      await spool.close();
    }
  }));

test('with no ready files configured each stream opens its own', () =>
  withDir(async (dataDir) => {
    const spool = new Spool(dataDir, { readyTempFiles: 0 });
    await spool.init();
    const s = spool.createTempWriteStream();
    await writeWhole(s.stream, 'x');
    s.stream.destroy();
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(await readdir(spool.tmpDir), [path.basename(s.path)]);
    assert.deepEqual(spool.readyTempFiles(), []);
    await spool.close();
  }));

test('a ready file removed while it waited is dropped, never handed out', () =>
  withDir(async (dir) => {
    const pool = poolIn(dir, 2);
    try {
      pool.fill();
      await until(() => pool.readyNames().length === 2, 'two ready files');
      const [gone, kept] = pool.readyNames().map((n) => path.join(dir, n));
      await rm(gone!);
      const taken = pool.take();
      assert.equal(taken?.path, kept, 'the removed file was skipped');
    } finally {
      await pool.close();
    }
  }));
