// The durable instance store. Every received instance is written to a temp file, fsync'd, and renamed into
// <dataDir>/spool/studies/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm; the directory is fsync'd after the
// rename, so an instance that was answered Success survives a crash or power loss.
import { randomUUID } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { isValidUid, requireUid } from '../dicom/uid.ts';

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

export class Spool {
  readonly root: string;
  readonly studiesDir: string;
  readonly tmpDir: string;

  constructor(dataDir: string) {
    this.root = path.resolve(dataDir, 'spool');
    this.studiesDir = path.join(this.root, 'studies');
    this.tmpDir = path.join(this.root, 'tmp');
  }

  /** Creates the spool directories; idempotent. Call once before the synchronous temp-stream API. */
  async init(): Promise<void> {
    await mkdir(this.studiesDir, { recursive: true });
    await mkdir(this.tmpDir, { recursive: true });
  }

  /** A fresh, unused temp file path (the file itself is not created). */
  newTempPath(): string {
    return path.join(this.tmpDir, `${Date.now()}-${randomUUID()}${TEMP_SUFFIX}`);
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
   * It fsyncs before closing (`flush`), so commit it with `{ alreadySynced: true }`. Requires init().
   */
  createTempWriteStream(): { path: string; stream: WriteStream } {
    const tempPath = this.newTempPath();
    const stream = createWriteStream(tempPath, { flags: 'wx', mode: FILE_MODE, flush: true });
    return { path: tempPath, stream };
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
    const studyUid = requireUid('StudyInstanceUID', key.studyUid);
    const seriesUid = requireUid('SeriesInstanceUID', key.seriesUid);
    const sopInstanceUid = requireUid('SOPInstanceUID', key.sopInstanceUid);
    this.assertInside(this.tmpDir, tempPath);

    if (!opts.alreadySynced) await fsyncPath(tempPath, 'r+');

    const seriesDir = path.join(this.studiesDir, studyUid, seriesUid);
    const firstCreated = await mkdir(seriesDir, { recursive: true });
    const finalPath = path.join(seriesDir, `${sopInstanceUid}${INSTANCE_SUFFIX}`);
    await rename(tempPath, finalPath);

    // Make the rename durable; when directories were just created, their entries in the parents too.
    await fsyncPath(seriesDir, 'r');
    if (firstCreated !== undefined) {
      const stopAt = path.dirname(firstCreated);
      for (let dir = path.dirname(seriesDir); ; dir = path.dirname(dir)) {
        await fsyncPath(dir, 'r');
        if (dir === stopAt || dir === path.dirname(dir)) break;
      }
    }
    return finalPath;
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

  async removeStudy(studyUid: string): Promise<void> {
    await rm(this.studyPath(studyUid), { recursive: true, force: true });
  }

  /**
   * Deletes temp files left by an earlier run (a transfer cut off by a crash or an abort). Only files older
   * than `olderThanMs` go, so a second process sharing the spool keeps its in-flight files. Returns the count.
   */
  async cleanupTemp(olderThanMs = 0): Promise<number> {
    await this.init();
    const cutoff = Date.now() - olderThanMs;
    let removed = 0;
    for (const entry of await readDirOrEmpty(this.tmpDir)) {
      if (!entry.isFile()) continue;
      const file = path.join(this.tmpDir, entry.name);
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
