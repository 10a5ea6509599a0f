// The filesystem backend: the shared ObjectStore contract, and what is particular to files: the on-disk
// layout stays what the Spool always wrote (existing data directories keep working), localCopy hands out the
// file itself, put leaves no temp file, and retire prunes the directories it empties.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { finished } from 'node:stream/promises';
import { test } from 'node:test';
import { createObjectStore } from '../../../src/storage/create-object-store.ts';
import { FilesystemObjectStore, InvalidObjectKeyError } from '../../../src/storage/filesystem-store.ts';
import { objectKey } from '../../../src/storage/object-keys.ts';
import { Spool } from '../../../src/storage/spool.ts';
import { describeObjectStoreContract } from '../../helpers/object-store-contract.ts';
import { configSchema } from '../../../src/config/schema.ts';

async function tempStore(): Promise<{
  store: FilesystemObjectStore;
  dataDir: string;
  cleanup(): Promise<void>;
}> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'aigw-fsstore-'));
  return {
    store: new FilesystemObjectStore(dataDir),
    dataDir,
    cleanup: () => rm(dataDir, { recursive: true, force: true }),
  };
}

describeObjectStoreContract('filesystem', tempStore);

const inst = { studyUid: '2.25.7', seriesUid: '2.25.7.1', sopInstanceUid: '2.25.7.1.1' };

test('keys map onto the layout the spool always had: spool/studies/… and outbox/…', async (t) => {
  const { store, dataDir, cleanup } = await tempStore();
  t.after(cleanup);
  await store.init();
  await store.put(objectKey.instance(inst), Buffer.from('image'));
  await store.put(objectKey.outbox('2.25.7', '2.25.99'), Buffer.from('sr'));
  assert.deepEqual(await readdir(path.join(dataDir, 'spool', 'studies', '2.25.7', '2.25.7.1')), [
    '2.25.7.1.1.dcm',
  ]);
  assert.deepEqual(
    await readdir(path.join(dataDir, 'outbox', '2.25.7')),
    ['2.25.99.dcm'],
    'no temp file left',
  );
  assert.equal(store.location, path.resolve(dataDir));
  assert.equal(store.kind, 'filesystem');
  // localCopy is the store's own file; release leaves it alone.
  const copy = await store.localCopy(objectKey.instance(inst));
  assert.equal(copy.path, path.join(dataDir, 'spool', 'studies', '2.25.7', '2.25.7.1', '2.25.7.1.1.dcm'));
  await copy.release();
  assert.equal((await store.get(objectKey.instance(inst))).toString(), 'image');
});

test('a data directory written before the seam is read as it is; strays are not listed', async (t) => {
  const { store, dataDir, cleanup } = await tempStore();
  t.after(cleanup);
  // What the Spool wrote before the store existed.
  const spool = new Spool(dataDir);
  await spool.init();
  const temp = await spool.createTempFile();
  await temp.handle.writeFile('old image');
  await temp.handle.close();
  await spool.commit(temp.path, inst);
  await mkdir(path.join(dataDir, 'outbox', '2.25.7'), { recursive: true });
  await writeFile(path.join(dataDir, 'outbox', '2.25.7', '2.25.98.dcm'), 'old sr');
  // Strays a key never names: a hidden temp file, a non-UID name, a file at the wrong depth.
  await writeFile(path.join(dataDir, 'outbox', '2.25.7', '.2.25.97.dcm.abc.tmp'), 'x');
  await writeFile(path.join(dataDir, 'spool', 'studies', '2.25.7', 'notes.dcm'), 'x');
  await mkdir(path.join(dataDir, 'spool', 'studies', 'evil'), { recursive: true });
  await writeFile(path.join(dataDir, 'spool', 'studies', 'evil', 'x.dcm'), 'x');

  await store.init();
  const keys: string[] = [];
  for await (const o of store.list('')) keys.push(o.key);
  assert.deepEqual(keys, [objectKey.outbox('2.25.7', '2.25.98'), objectKey.instance(inst)]);
  assert.equal((await store.get(objectKey.outbox('2.25.7', '2.25.98'))).toString(), 'old sr');
});

test('retire and deletePrefix prune the directories they empty, never the area roots', async (t) => {
  const { store, dataDir, cleanup } = await tempStore();
  t.after(cleanup);
  await store.init();
  await store.put(objectKey.instance(inst), Buffer.from('x'));
  const written = (await store.stat(objectKey.instance(inst)))!.modifiedAt;
  assert.equal(await store.retire(objectKey.instance(inst), written), 'removed');
  assert.deepEqual(await readdir(path.join(dataDir, 'spool', 'studies')), []);
  await store.put(objectKey.outbox('2.25.7', '2.25.99'), Buffer.from('sr'));
  assert.equal(await store.deletePrefix(objectKey.outboxPrefix('2.25.7')), 1);
  assert.deepEqual(await readdir(path.join(dataDir, 'outbox')), []);
  // The staging area has no retired copy left either.
  assert.deepEqual(await readdir(path.join(dataDir, 'spool', 'tmp')), []);
});

test('an invalid key is refused with InvalidObjectKeyError and touches no file', async (t) => {
  const { store, dataDir, cleanup } = await tempStore();
  t.after(cleanup);
  await store.init();
  await assert.rejects(store.put('studies/../../escape.dcm', Buffer.from('x')), InvalidObjectKeyError);
  const s = store.stage();
  s.stream.end(Buffer.from('x'));
  await finished(s.stream);
  await assert.rejects(s.commit('../escape.dcm'), InvalidObjectKeyError);
  await s.discard();
  assert.deepEqual((await readdir(dataDir)).sort(), ['outbox', 'spool']);
  assert.deepEqual(await readdir(path.dirname(dataDir)).then((e) => e.includes('escape.dcm')), false);
});

test('check() fails when the data directory is gone; createObjectStore defaults to the filesystem', async (t) => {
  const { dataDir, cleanup } = await tempStore();
  t.after(cleanup);
  const config = configSchema.parse({ dataDir, redis: { autoStart: false } });
  const store = createObjectStore(config);
  assert.ok(store instanceof FilesystemObjectStore);
  await store.init();
  await store.check();
  await rm(dataDir, { recursive: true, force: true });
  await assert.rejects(store.check());
});
