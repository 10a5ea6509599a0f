// The filesystem backend of the storage seam (the zero-config default): a thin adapter from object keys to
// files under <dataDir>, over the Spool's durable mechanics (temp file fdatasync'd before 'finish', rename,
// directory fsync; retire's rename-aside compare-and-delete; stale temp cleanup). Layout, unchanged from
// before the seam so existing data directories keep working:
//   studies/<S>/<Se>/<SOP>.dcm  →  <dataDir>/spool/studies/<S>/<Se>/<SOP>.dcm
//   outbox/<S>/<SOP>.dcm        →  <dataDir>/outbox/<S>/<SOP>.dcm
// Staged writes are temp files in <dataDir>/spool/tmp. Every key is checked against the known key shapes
// before a path is built from it: no '..', no absolute path, no empty segment can reach the filesystem.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, mkdir, open, readFile, readdir, rmdir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { isValidUid } from '../dicom/uid.ts';
import { parseInstanceKey } from './object-keys.ts';
import {
  ObjectNotFoundError,
  type FlowControl,
  type LocalCopy,
  type ObjectStore,
  type RetireOutcome,
  type StagedWrite,
  type StoredObject,
} from './object-store.ts';
import { Spool } from './spool.ts';

const STUDIES = 'studies';
const OUTBOX = 'outbox';
const SUFFIX = '.dcm';
const FILE_MODE = 0o640;

/** A key the store refuses: not one of the shapes objectKey builds. */
export class InvalidObjectKeyError extends Error {
  constructor(key: string) {
    super(`not a valid object key: ${JSON.stringify(key.slice(0, 200))}`);
    this.name = 'InvalidObjectKeyError';
  }
}

/** True for an outbox key: outbox/<Study>/<SOP>.dcm. */
function isOutboxKey(key: string): boolean {
  if (!key.startsWith(`${OUTBOX}/`) || !key.endsWith(SUFFIX)) return false;
  const parts = key.slice(OUTBOX.length + 1, -SUFFIX.length).split('/');
  return parts.length === 2 && parts.every((p) => isValidUid(p));
}

export class FilesystemObjectStore implements ObjectStore {
  readonly kind = 'filesystem' as const;
  readonly location: string;
  /** The spool's mechanics: staging directory, commits, retire, stale temp cleanup. */
  readonly spool: Spool;
  private readonly root: string;
  private readonly outboxDir: string;

  constructor(dataDir: string) {
    this.root = path.resolve(dataDir);
    this.location = this.root;
    this.spool = new Spool(this.root);
    this.outboxDir = path.join(this.root, OUTBOX);
  }

  async init(): Promise<void> {
    await this.spool.init();
    await mkdir(this.outboxDir, { recursive: true });
  }

  stage(maxBytes?: number, flow?: FlowControl): StagedWrite {
    const { path: tempPath, stream } = this.spool.createTempWriteStream(maxBytes, flow);
    const spool = this.spool;
    let committed = false;
    const fileOf = (key: string) => this.fileOf(key);
    return {
      stream,
      async read(offset: number, length: number): Promise<Buffer> {
        const handle = await open(tempPath, 'r');
        try {
          const buf = Buffer.alloc(length);
          const { bytesRead } = await handle.read(buf, 0, length, offset);
          return buf.subarray(0, bytesRead);
        } finally {
          await handle.close();
        }
      },
      async commit(key: string): Promise<void> {
        const { file, base } = fileOf(key);
        if (committed) throw new Error('staged write already committed');
        // The stream fdatasync'd the file before 'finish'.
        await spool.commitFile(tempPath, file, base, { alreadySynced: true });
        committed = true;
      },
      async discard(): Promise<void> {
        if (committed) return;
        await spool.discard(tempPath).catch(() => undefined);
      },
    };
  }

  async put(key: string, bytes: Buffer): Promise<void> {
    const { file, base } = this.fileOf(key);
    const dir = path.dirname(file);
    await mkdir(dir, { recursive: true });
    // The temp file sits beside its target (same filesystem, whatever is mounted where); its name is no key.
    const temp = path.join(dir, `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
    const handle = await open(temp, 'wx', FILE_MODE);
    try {
      await handle.writeFile(bytes);
      await handle.datasync();
    } catch (err) {
      await handle.close();
      await unlink(temp).catch(() => undefined);
      throw err;
    }
    await handle.close();
    try {
      await this.spool.commitFile(temp, file, base, { alreadySynced: true });
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      throw err;
    }
  }

  async get(key: string): Promise<Buffer> {
    const { file } = this.fileOf(key);
    try {
      return await readFile(file);
    } catch (err) {
      throw notFound(err, key);
    }
  }

  async localCopy(key: string): Promise<LocalCopy> {
    const { file } = this.fileOf(key);
    try {
      await access(file, constants.R_OK);
    } catch (err) {
      throw notFound(err, key);
    }
    // The store's own file: nothing to release.
    return { path: file, release: async () => undefined };
  }

  async stat(key: string): Promise<StoredObject | undefined> {
    const { file } = this.fileOf(key);
    try {
      const info = await stat(file);
      if (!info.isFile()) return undefined;
      return { key, size: info.size, modifiedAt: Math.floor(info.mtimeMs) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async *list(prefix: string): AsyncIterable<StoredObject> {
    checkPrefix(prefix);
    // Areas in key order too: outbox/ sorts before studies/.
    for (const area of [OUTBOX, STUDIES]) {
      const areaPrefix = `${area}/`;
      if (!(areaPrefix.startsWith(prefix) || prefix.startsWith(areaPrefix))) continue;
      // The deepest directory every match lies under: the prefix's complete segments.
      const within = prefix.length > areaPrefix.length ? prefix.slice(areaPrefix.length) : '';
      const dirSegments = within.split('/').slice(0, -1);
      const startDir = path.join(this.areaDir(area), ...dirSegments);
      const startKey = [area, ...dirSegments].join('/');
      const valid = area === STUDIES ? (k: string) => parseInstanceKey(k) !== undefined : isOutboxKey;
      // Walked lazily, in key order: a spool of a million instances is never held as one list.
      for await (const key of walkKeys(startDir, startKey, prefix)) {
        if (!valid(key)) continue;
        const info = await this.stat(key);
        if (info !== undefined) yield info;
      }
    }
  }

  async delete(key: string): Promise<void> {
    const { file } = this.fileOf(key);
    await unlink(file).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }

  async deletePrefix(prefix: string): Promise<number> {
    checkPrefix(prefix);
    const keys: string[] = [];
    for await (const o of this.list(prefix)) keys.push(o.key);
    let removed = 0;
    for (const key of keys) {
      const { file } = this.fileOf(key);
      const gone = await unlink(file).then(
        () => true,
        (err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err;
          return false;
        },
      );
      if (gone) removed++;
    }
    // Empty directories left behind go (a directory a new file landed in meanwhile stays).
    const dirs = new Set(keys.map((k) => path.dirname(this.fileOf(k).file)));
    for (const dir of [...dirs].sort().reverse()) await pruneUpwards(dir, this.prefixFloor(prefix));
    return removed;
  }

  async retire(key: string, writtenBy: number): Promise<RetireOutcome> {
    const { file, base } = this.fileOf(key);
    const outcome = await this.spool.retireFile(file, writtenBy);
    // The series and study directories go once empty (a file committed meanwhile keeps them).
    if (outcome === 'removed') await pruneUpwards(path.dirname(file), base);
    return outcome;
  }

  cleanupStaging(olderThanMs: number): Promise<number> {
    return this.spool.cleanupTemp(olderThanMs);
  }

  async check(): Promise<void> {
    await access(this.spool.tmpDir, constants.W_OK);
    await access(this.spool.studiesDir, constants.W_OK);
  }

  async close(): Promise<void> {
    // The temp files made ahead for incoming streams; every other handle closes when its operation ends.
    await this.spool.close();
  }

  /** The file behind a key (validated first) and the area directory its commits sync up to. */
  private fileOf(key: string): { file: string; base: string } {
    const instance = parseInstanceKey(key);
    if (instance !== undefined) {
      return { file: this.spool.instancePath(instance), base: this.spool.studiesDir };
    }
    if (isOutboxKey(key)) {
      const [, study, name] = key.split('/') as [string, string, string];
      return { file: path.join(this.outboxDir, study, name), base: this.outboxDir };
    }
    throw new InvalidObjectKeyError(key);
  }

  private areaDir(area: string): string {
    return area === STUDIES ? this.spool.studiesDir : this.outboxDir;
  }

  /** The directory pruning stops at for a prefix: its area directory is never removed. */
  private prefixFloor(prefix: string): string {
    return prefix.startsWith(`${OUTBOX}/`) ? this.outboxDir : this.spool.studiesDir;
  }
}

/**
 * A listing prefix must be a beginning of a valid key: '', an area ('studies/', 'outbox/'), then UID
 * segments, each complete one a valid UID, the last possibly partial.
 */
function checkPrefix(prefix: string): void {
  if (prefix === '') return;
  const areas = [`${STUDIES}/`, `${OUTBOX}/`];
  if (areas.some((a) => a.startsWith(prefix))) return;
  const area = areas.find((a) => prefix.startsWith(a));
  if (area === undefined) throw new InvalidObjectKeyError(prefix);
  const segments = prefix.slice(area.length).split('/');
  const last = segments.pop()!;
  const maxDirs = area === `${STUDIES}/` ? 2 : 1;
  if (segments.length > maxDirs || !segments.every((s) => isValidUid(s))) {
    throw new InvalidObjectKeyError(prefix);
  }
  if (!/^[0-9.]*(\.dcm)?$/.test(last) || last.startsWith('.')) throw new InvalidObjectKeyError(prefix);
}

/**
 * The keys of the files below dir (keyBase naming dir), in key order, skipping subtrees that cannot match
 * prefix. Siblings sort as their keys do: a directory by its name and a '/', so '1.2.3/' comes before '1.2/'
 * exactly as 'studies/1.2.3/…' sorts before 'studies/1.2/…'. A missing dir is empty.
 */
async function* walkKeys(dir: string, keyBase: string, prefix: string): AsyncGenerator<string> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return;
    throw err;
  }
  const children = entries
    // Temp files of put() and names no UID makes are skipped before anything is built from them.
    .filter((e) => !e.name.startsWith('.'))
    .filter((e) => e.isDirectory() || (e.isFile() && e.name.endsWith(SUFFIX)))
    .map((e) => ({
      name: e.name,
      dir: e.isDirectory(),
      key: `${keyBase}/${e.name}${e.isDirectory() ? '/' : ''}`,
    }))
    .filter((c) => c.key.startsWith(prefix) || prefix.startsWith(c.key))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (const c of children) {
    if (c.dir) yield* walkKeys(path.join(dir, c.name), c.key.slice(0, -1), prefix);
    else if (c.key.startsWith(prefix)) yield c.key;
  }
}

/** Removes dir and its parents while they are empty, stopping below floor. */
async function pruneUpwards(dir: string, floor: string): Promise<void> {
  for (let d = dir; d !== floor && d.startsWith(`${floor}${path.sep}`); d = path.dirname(d)) {
    const removed = await rmdir(d).then(
      () => true,
      () => false,
    );
    if (!removed) return;
  }
}

function notFound(err: unknown, key: string): Error {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR' ? new ObjectNotFoundError(key) : (err as Error);
}
