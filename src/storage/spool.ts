// The durable instance store. Every received instance is written to a temp file, fsync'd, and renamed into
// <dataDir>/spool/studies/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm; the directory is fsync'd after the
// rename, so an instance that was answered Success survives a crash or power loss.
import { HeadBytes } from './head-bytes.ts';
import { randomUUID } from 'node:crypto';
import {
  closeSync,
  fdatasync,
  fstatSync,
  fsync,
  open as openFd,
  statSync,
  write,
  writev,
  writevSync,
} from 'node:fs';
import {
  link,
  mkdir,
  open,
  readdir,
  rename,
  rm,
  rmdir,
  stat,
  unlink,
  type FileHandle,
} from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { isValidUid, requireUid } from '../dicom/uid.ts';
import { InstanceTooLargeError, STAGED_SEALED, type FlowControl } from './object-store.ts';
import { TempFilePool, type PooledTempFile } from './temp-file-pool.ts';

// Both live with the storage contract now; re-exported for the spool's existing users.
export { InstanceTooLargeError, type FlowControl };

export interface InstanceKey {
  studyUid: string;
  seriesUid: string;
  sopInstanceUid: string;
}

export interface SeriesFiles {
  seriesUid: string;
  /** Absolute paths of the series' instance files, sorted by name. */
  paths: string[];
}

export interface CommitOptions {
  /** The caller already fsync'd the temp file (e.g. a write stream opened with `flush: true`). */
  alreadySynced?: boolean;
}

const FILE_MODE = 0o640;
const TEMP_SUFFIX = '.part';
const INSTANCE_SUFFIX = '.dcm';
/** Instances taken aside by retention, for the moment between rename and unlink. */
const RETIRED_SUFFIX = '.retired';

export interface SpoolOptions {
  /** Temp files created ahead for incoming streams (default 4; 0: each stream creates its own). */
  readyTempFiles?: number;
  /** A ready temp file older than this is replaced (default 30 s; keep it well under the staging sweep's age). */
  readyTempMaxAgeMs?: number;
}

const READY_TEMP_FILES = 4;
const READY_TEMP_MAX_AGE_MS = 30_000;

export class Spool {
  private readonly dirSyncs = new DirectorySyncs();
  private readonly readyTemps: TempFilePool;
  readonly root: string;
  readonly studiesDir: string;
  readonly tmpDir: string;

  constructor(dataDir: string, opts: SpoolOptions = {}) {
    this.root = path.resolve(dataDir, 'spool');
    this.studiesDir = path.join(this.root, 'studies');
    this.tmpDir = path.join(this.root, 'tmp');
    this.readyTemps = new TempFilePool({
      dir: this.tmpDir,
      suffix: TEMP_SUFFIX,
      mode: FILE_MODE,
      size: opts.readyTempFiles ?? READY_TEMP_FILES,
      maxAgeMs: opts.readyTempMaxAgeMs ?? READY_TEMP_MAX_AGE_MS,
    });
  }

  /** Creates the spool directories; idempotent. Call once before the synchronous temp-stream API. */
  async init(): Promise<void> {
    await mkdir(this.studiesDir, { recursive: true });
    await mkdir(this.tmpDir, { recursive: true });
  }

  /** A fresh, unused temp file path (the file itself is not created). */
  newTempPath(): string {
    return this.readyTemps.newPath();
  }

  /**
   * Names of the empty temp files made ahead for the next streams (temp-file-pool.ts): they are in tmpDir
   * but belong to no transfer, and the staging sweep leaves them alone.
   */
  readyTempFiles(): string[] {
    return this.readyTemps.readyNames();
  }

  /** Closes and removes the temp files made ahead. */
  async close(): Promise<void> {
    await this.readyTemps.close();
  }

  /** Opens a new temp file for writing; the caller writes, closes, then commits or discards it. */
  async createTempFile(): Promise<{ path: string; handle: FileHandle }> {
    await this.init();
    const tempPath = this.newTempPath();
    const handle = await open(tempPath, 'wx', FILE_MODE);
    return { path: tempPath, handle };
  }

  /**
   * A write stream on a new temp file, created synchronously (for stream factories that cannot await).
   * It fsyncs before closing, so commit it with `{ alreadySynced: true }`. Writing more than `maxBytes`
   * fails the stream with InstanceTooLargeError instead of filling the disk. Requires init().
   */
  createTempWriteStream(
    maxBytes = Number.MAX_SAFE_INTEGER,
    flow?: FlowControl,
  ): { path: string; stream: TempFileStream } {
    // A file made ahead when one is ready: the data set need not wait for the file system to create it.
    const ready = this.readyTemps.take();
    const tempPath = ready?.path ?? this.newTempPath();
    return { path: tempPath, stream: new TempFileStream(tempPath, maxBytes, flow, ready) };
  }

  /** Removes a temp file that will not be committed; a missing file is not an error. */
  async discard(tempPath: string): Promise<void> {
    this.assertInside(this.tmpDir, tempPath);
    await unlink(tempPath).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }

  /**
   * Moves a finished temp file into place and returns its final path. UIDs are validated before any path
   * is built (InvalidUidError). A resent instance replaces the earlier file atomically.
   */
  async commit(tempPath: string, key: InstanceKey, opts: CommitOptions = {}): Promise<string> {
    const finalPath = this.instancePath(key);
    this.assertInside(this.tmpDir, tempPath);
    await this.commitFile(tempPath, finalPath, this.studiesDir, opts);
    return finalPath;
  }

  /**
   * Moves a finished file into place at finalPath (a path under base, built by the caller from validated
   * names): rename, then fsync of the directory; where the directory was missing, it is made and every
   * directory from it up to base is fsync'd too. A file already at finalPath is replaced atomically.
   */
  async commitFile(
    tempPath: string,
    finalPath: string,
    base: string,
    opts: CommitOptions = {},
  ): Promise<void> {
    if (!opts.alreadySynced) await fsyncPath(tempPath, 'r+');

    const dir = path.dirname(finalPath);
    let newDir = false;
    // Most instances land in a series directory that exists already: try the rename first. A directory
    // that retention pruned between our mkdir and rename is made again (a few tries, then the error).
    for (let attempt = 0; ; attempt++) {
      try {
        await rename(tempPath, finalPath);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 3) throw err;
        newDir = true;
        await mkdir(dir, { recursive: true });
      }
    }

    // Make the rename durable; for a directory that was missing (made by us or by a concurrent commit that
    // may not have synced yet), the entries of its parents up to base too.
    await this.dirSyncs.sync(dir);
    if (newDir) {
      for (let d = path.dirname(dir); ; d = path.dirname(d)) {
        await this.dirSyncs.sync(d);
        if (d === base || path.dirname(d) === d || !d.startsWith(base)) break;
      }
    }
  }

  instancePath(key: InstanceKey): string {
    const studyUid = requireUid('StudyInstanceUID', key.studyUid);
    const seriesUid = requireUid('SeriesInstanceUID', key.seriesUid);
    const sopInstanceUid = requireUid('SOPInstanceUID', key.sopInstanceUid);
    return path.join(this.studiesDir, studyUid, seriesUid, `${sopInstanceUid}${INSTANCE_SUFFIX}`);
  }

  studyPath(studyUid: string): string {
    return path.join(this.studiesDir, requireUid('StudyInstanceUID', studyUid));
  }

  /** Study UIDs present in the spool (directories whose names are valid UIDs), sorted. */
  async listStudies(): Promise<string[]> {
    const entries = await readDirOrEmpty(this.studiesDir);
    return entries
      .filter((e) => e.isDirectory() && isValidUid(e.name))
      .map((e) => e.name)
      .sort();
  }

  /** The study's instance files grouped by series, for restart reconciliation; [] for an unknown study. */
  async listInstances(studyUid: string): Promise<SeriesFiles[]> {
    const studyDir = this.studyPath(studyUid);
    const result: SeriesFiles[] = [];
    for (const series of await readDirOrEmpty(studyDir)) {
      if (!series.isDirectory() || !isValidUid(series.name)) continue;
      const seriesDir = path.join(studyDir, series.name);
      const paths = (await readDirOrEmpty(seriesDir))
        .filter((f) => f.isFile() && f.name.endsWith(INSTANCE_SUFFIX))
        .filter((f) => isValidUid(f.name.slice(0, -INSTANCE_SUFFIX.length)))
        .map((f) => path.join(seriesDir, f.name))
        .sort();
      if (paths.length > 0) result.push({ seriesUid: series.name, paths });
    }
    return result.sort((a, b) => (a.seriesUid < b.seriesUid ? -1 : a.seriesUid > b.seriesUid ? 1 : 0));
  }

  /**
   * Removes one spooled instance if the file is the copy written no later than `writtenBy` (epoch ms; the
   * index record's receivedAt, which is taken after the file was written), never a copy re-sent meanwhile: the file is first renamed aside (atomic), and if the copy taken
   * aside turns out to be newer than the cut-off it is put back, unless a still newer copy has already
   * taken its place. No lock is shared with ingest, so commits never wait for retention.
   */
  async retireInstance(key: InstanceKey, writtenBy: number): Promise<'removed' | 'kept' | 'absent'> {
    return this.retireFile(this.instancePath(key), writtenBy);
  }

  /** retireInstance for any file on the spool's filesystem (the object store's other keys). */
  async retireFile(target: string, writtenBy: number): Promise<'removed' | 'kept' | 'absent'> {
    await this.init();
    const aside = path.join(this.tmpDir, `${Date.now()}-${randomUUID()}${RETIRED_SUFFIX}`);
    try {
      await rename(target, aside);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
      throw err;
    }
    try {
      // receivedAt is whole milliseconds; the file's mtime of the same millisecond may carry a fraction.
      if (Math.floor((await stat(aside)).mtimeMs) <= writtenBy) return 'removed';
      // A re-sent copy: back into place, unless an even newer commit already holds the name.
      await link(aside, target).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
      return 'kept';
    } finally {
      await unlink(aside).catch(() => undefined);
    }
  }

  /** Removes a study's series and study directories once they are empty (a new file keeps them). */
  async pruneStudyDirs(studyUid: string): Promise<void> {
    const studyDir = this.studyPath(studyUid);
    for (const entry of await readDirOrEmpty(studyDir)) {
      if (entry.isDirectory()) await rmdir(path.join(studyDir, entry.name)).catch(() => undefined);
    }
    await rmdir(studyDir).catch(() => undefined);
  }

  async removeStudy(studyUid: string): Promise<void> {
    await rm(this.studyPath(studyUid), { recursive: true, force: true });
  }

  /**
   * Deletes temp files left by an earlier run (a transfer cut off by a crash or an abort). Only files older
   * than `olderThanMs` go, so a second process sharing the spool keeps its in-flight files. Returns the count.
   */
  async cleanupTemp(olderThanMs: number): Promise<number> {
    await this.init();
    const cutoff = Date.now() - olderThanMs;
    let removed = 0;
    for (const entry of await readDirOrEmpty(this.tmpDir)) {
      if (!entry.isFile()) continue;
      const file = path.join(this.tmpDir, entry.name);
      if (this.readyTemps.holds(file)) continue;
      const info = await stat(file).catch(() => undefined);
      if (info === undefined || info.mtimeMs > cutoff) continue;
      await unlink(file).catch(() => undefined);
      removed++;
    }
    return removed;
  }

  /** Defence in depth: a path handed back to us must stay inside the directory it claims to be in. */
  private assertInside(dir: string, candidate: string): void {
    const rel = path.relative(dir, path.resolve(candidate));
    if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel) || rel.includes(path.sep)) {
      throw new Error(`path is not a file in ${dir}`);
    }
  }
}

/**
 * A file's first bytes up to this are written in place, on the calling thread: a copy of a few microseconds,
 * less than a round trip through libuv's thread pool. Everything after goes to the pool. Copying into the
 * page cache is not always cheap: on the 2-core VM of docs/benchmarks.md, whose guest memory is handed back
 * to the host when free (virtio-balloon free page reporting), a 512 KiB instance took 0.2 to 1.4 ms, and
 * written in place that was 45 % of the event loop's busy time over four associations: time no other
 * association was served.
 */
const IN_PLACE_BYTES = 64 * 1024;

type WriteCallback = (error: Error | null | undefined) => void;

/**
 * Writes straight to a file descriptor, counts the bytes, and fsyncs before 'finish', so a stream that
 * finished without error is durable. Chunks arrive PDU- or part-sized, so one write call each is cheap.
 * With `flow`, the source is paused whenever more than highWaterMark bytes wait for the disk: dcmjs-dimse
 * writes every PDV without waiting, so this is what keeps memory flat when the network outruns the disk.
 */
export class TempFileStream extends Writable {
  private fd: number | undefined;
  bytesWritten = 0;

  /** The first bytes written, so the header can be parsed without reading the object back. */
  private readonly headBytes = new HeadBytes();

  constructor(
    readonly path: string,
    private readonly maxBytes: number,
    private readonly flow?: FlowControl,
    /** A file already created at `path` (Spool's ready temp files); the stream opens its own otherwise. */
    private readonly opened?: PooledTempFile,
  ) {
    super({ highWaterMark: 4 * 1024 * 1024 });
    if (flow !== undefined) {
      this.on('drain', () => flow.resume());
      this.on('close', () => flow.resume());
    }
  }

  /**
   * Takes the file made ahead for it, if any; else opens one off the main thread: creating a file can wait on
   * the file system (inode allocation, the directory's lock while other files are renamed out of it), and the
   * event loop serves every association. Writes made meanwhile are kept by the stream and go out together
   * (one writev) once it is open.
   */
  override _construct(done: (err?: Error | null) => void): void {
    if (this.opened !== undefined) {
      this.fd = this.opened.fd;
      return done();
    }
    openFd(this.path, 'wx', FILE_MODE, (err, fd) => {
      if (err) return done(err);
      this.fd = fd;
      done();
    });
  }

  override write(chunk: unknown, encoding?: BufferEncoding | WriteCallback, cb?: WriteCallback): boolean {
    const ok = typeof encoding === 'string' ? super.write(chunk, encoding, cb) : super.write(chunk, encoding);
    // A stream that failed (over the size limit) or ended drains nothing: pausing the socket then would
    // stall the association until its idle timeout instead of letting the refusal be answered.
    if (this.destroyed || this.writableEnded) return true;
    if (!ok) this.flow?.pause();
    return ok;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    const { fd } = this;
    if (fd === undefined) return done(new Error('temp file is not open'));
    if (this.bytesWritten + chunk.length > this.maxBytes)
      return done(new InstanceTooLargeError(this.maxBytes));
    this.bytesWritten += chunk.length;
    this.headBytes.note(chunk);
    if (this.bytesWritten <= IN_PLACE_BYTES) return writeInPlace(fd, [chunk], done);
    writeAll(fd, chunk, done);
  }

  /**
   * Several chunks queued while a write ran (the PDU fragments of one socket read, say): one writev for all.
   * A short write (not seen on regular files, but allowed) is finished with plain writes.
   */
  override _writev(chunks: { chunk: Buffer }[], done: (err?: Error | null) => void): void {
    const { fd } = this;
    if (fd === undefined) return done(new Error('temp file is not open'));
    const buffers = chunks.map((c) => c.chunk);
    const total = buffers.reduce((n, b) => n + b.length, 0);
    if (this.bytesWritten + total > this.maxBytes) return done(new InstanceTooLargeError(this.maxBytes));
    for (const b of buffers) this.headBytes.note(b);
    this.bytesWritten += total;
    if (this.bytesWritten <= IN_PLACE_BYTES) return writeInPlace(fd, buffers, done);
    writev(fd, buffers, null, (err, n) => {
      if (err) return done(err);
      if (n >= total) return done();
      writeAll(fd, Buffer.concat(buffers).subarray(n), done);
    });
  }

  /** The first bytes written (at most 64 KiB). */
  get head(): Buffer {
    return this.headBytes.bytes;
  }

  override _final(done: (err?: Error | null) => void): void {
    if (this.fd === undefined) return done(new Error('temp file is not open'));
    // fdatasync: the data and the size, which is all a later read needs, without the timestamps' extra write.
    fdatasync(this.fd, (err) => done(err));
    // Issued first, so that whoever parses the head on 'sealed' does it while the sync runs in the pool.
    this.emit(STAGED_SEALED);
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    const { fd } = this;
    this.fd = undefined;
    if (fd === undefined) return done(err);
    // Closing a local file whose data is synced (or abandoned) is a few microseconds in the kernel: done
    // here rather than as a round trip through libuv's thread pool.
    let closeErr: Error | undefined;
    try {
      closeSync(fd);
    } catch (e) {
      closeErr = e as Error;
    }
    done(err ?? closeErr);
  }
}

/** Writes all of buffers at the file's position on this thread (writev, then the rest of a short write). */
function writeInPlace(fd: number, buffers: Buffer[], done: (err?: Error | null) => void): void {
  let err: Error | undefined;
  try {
    const total = buffers.reduce((n, b) => n + b.length, 0);
    let written = writevSync(fd, buffers);
    if (written < total) {
      const rest = Buffer.concat(buffers).subarray(written);
      while (written < total) written += writevSync(fd, [rest.subarray(written - (total - rest.length))]);
    }
  } catch (e) {
    err = e as Error;
  }
  done(err);
}

/** Writes all of chunk at the file's position, however many write calls it takes. */
function writeAll(fd: number, chunk: Buffer, done: (err?: Error | null) => void): void {
  const writeFrom = (offset: number): void => {
    write(fd, chunk, offset, chunk.length - offset, null, (err, n) => {
      if (err) return done(err);
      if (offset + n < chunk.length) return writeFrom(offset + n);
      done();
    });
  };
  writeFrom(0);
}

/** Directory descriptors kept open for their fsyncs, at most (least recently used closed first). */
const MAX_OPEN_DIRS = 32;

interface OpenDir {
  fd: number;
  dev: number;
  ino: number;
  /** fsyncs running on fd: it is closed only once none is. */
  users: number;
  evicted: boolean;
  lastUsed: number;
}

/**
 * Group commit for directory fsyncs: instances of one series land in one directory, often several at once
 * (parallel associations). A caller arriving while a sync of that directory runs waits for the next one,
 * which covers its rename; everyone arriving meanwhile shares that next sync.
 *
 * The directory stays open between syncs (one fsync instead of open + fsync + close per instance). A kept
 * descriptor is used only while it still IS the directory at that path: the path's device and inode match
 * the descriptor's, and the descriptor's directory has not been removed (nlink > 0; an inode number can be
 * reused by a directory made after the removal). The spool never renames directories, so a directory that
 * is at the path now, after the caller's rename, was there at the rename: the rename went into it.
 */
export class DirectorySyncs {
  /** Directories opened (for tests: a kept descriptor is not opened again). */
  opened = 0;
  private readonly state = new Map<string, { running: Promise<void>; next?: Promise<void> }>();
  private readonly open = new Map<string, OpenDir>();
  private sweeper: NodeJS.Timeout | undefined;

  /** @param idleMs a kept descriptor unused this long is closed (a spool at rest holds none open). */
  constructor(private readonly idleMs = 2000) {}

  sync(dir: string): Promise<void> {
    const current = this.state.get(dir);
    if (current === undefined) return this.start(dir);
    current.next ??= current.running.catch(() => undefined).then(() => this.start(dir));
    return current.next;
  }

  private start(dir: string): Promise<void> {
    const running = this.syncNow(dir).finally(() => {
      const s = this.state.get(dir);
      if (s?.running !== running) return;
      if (s.next === undefined) this.state.delete(dir);
    });
    const entry = this.state.get(dir);
    if (entry === undefined) this.state.set(dir, { running });
    else {
      entry.running = running;
      entry.next = undefined;
    }
    return running;
  }

  private async syncNow(dir: string): Promise<void> {
    // Either way d comes counted as a user, so nothing closes it before the fsync below is done.
    const d = this.kept(dir) ?? (await this.openDir(dir));
    try {
      await new Promise<void>((resolve, reject) => fsync(d.fd, (err) => (err ? reject(err) : resolve())));
    } catch (err) {
      // A failed fsync may have dropped the error state with it: never trust this descriptor again.
      this.evict(dir, d);
      throw err;
    } finally {
      d.users--;
      d.lastUsed = Date.now();
      if (d.evicted) this.closeIfIdle(d);
      else this.sweepLater();
    }
  }

  /** Closes kept descriptors idle for idleMs, checking every idleMs while any is kept. */
  private sweepLater(): void {
    if (this.sweeper !== undefined) return;
    this.sweeper = setTimeout(() => {
      this.sweeper = undefined;
      const cutoff = Date.now() - this.idleMs;
      for (const [dir, d] of this.open) if (d.users === 0 && d.lastUsed <= cutoff) this.evict(dir, d);
      if (this.open.size > 0) this.sweepLater();
    }, this.idleMs);
    this.sweeper.unref();
  }

  /** The kept descriptor of dir (counted as a user) if it is still the directory at that path; else none. */
  private kept(dir: string): OpenDir | undefined {
    const d = this.open.get(dir);
    if (d === undefined) return undefined;
    try {
      const atPath = statSync(dir);
      if (atPath.dev === d.dev && atPath.ino === d.ino && fstatSync(d.fd).nlink > 0) {
        this.open.delete(dir); // most recently used last
        this.open.set(dir, d);
        d.users++;
        return d;
      }
    } catch {
      // The path is gone or the descriptor unusable: open afresh (which reports a missing path).
    }
    this.evict(dir, d);
    return undefined;
  }

  private async openDir(dir: string): Promise<OpenDir> {
    const fd = await new Promise<number>((resolve, reject) =>
      openFd(dir, 'r', (err, fd) => (err ? reject(err) : resolve(fd))),
    );
    this.opened++;
    let info;
    try {
      info = fstatSync(fd);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    const d: OpenDir = { fd, dev: info.dev, ino: info.ino, users: 1, evicted: false, lastUsed: Date.now() };
    const previous = this.open.get(dir);
    if (previous !== undefined) this.evict(dir, previous);
    this.open.set(dir, d);
    while (this.open.size > MAX_OPEN_DIRS) {
      const [oldest, od] = this.open.entries().next().value!;
      this.evict(oldest, od);
    }
    return d;
  }

  private evict(dir: string, d: OpenDir): void {
    if (this.open.get(dir) === d) this.open.delete(dir);
    d.evicted = true;
    this.closeIfIdle(d);
  }

  private closeIfIdle(d: OpenDir): void {
    if (d.users > 0 || d.fd < 0) return;
    const { fd } = d;
    d.fd = -1;
    try {
      closeSync(fd);
    } catch {
      // Nothing more to do with it.
    }
  }
}

async function fsyncPath(p: string, flags: 'r' | 'r+'): Promise<void> {
  const handle = await open(p, flags);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function readDirOrEmpty(dir: string) {
  try {
    return await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
