// Temp files created ahead of need. Creating a file is the slowest step of a C-STORE's receive on a busy
// ext4 (inode allocation, the staging directory's lock): about 1 ms here against 0.25 ms for the whole
// 512 KiB data set to arrive over loopback. An association's data set therefore waited for its own open().
// The pool creates the next few files in the background, so a data set starts writing as soon as it comes.
// Durability is unchanged: a pooled file is only an empty temp file, written, fdatasync'd, renamed and its
// directory fsync'd exactly as one opened on demand.
import { randomUUID } from 'node:crypto';
import { close as closeFd, fstatSync, open as openFd } from 'node:fs';
import { unlink } from 'node:fs/promises';
import path from 'node:path';

export interface PooledTempFile {
  path: string;
  fd: number;
}

export interface TempFilePoolOptions {
  /** The staging directory (must exist before the first fill). */
  dir: string;
  /** The name's suffix: the staging sweep recognises temp files by it. */
  suffix: string;
  mode: number;
  /** Files kept ready (0: none, every stream opens its own). */
  size: number;
  /**
   * A pooled file older than this is replaced, never handed out: the staging sweep (any gateway sharing
   * the directory) removes temp files by age, and must never find one of ours still waiting here.
   */
  maxAgeMs: number;
}

interface Ready extends PooledTempFile {
  createdAt: number;
}

export class TempFilePool {
  private readonly ready: Ready[] = [];
  /** Opens running now. */
  private readonly opening = new Set<Promise<void>>();
  private closed = false;
  /** The last open failed (disk full, permissions): no refill until a take asks again. */
  private failing = false;

  constructor(private readonly opts: TempFilePoolOptions) {}

  /** A fresh temp file name in the staging directory (what an on-demand open uses too). */
  newPath(): string {
    return path.join(this.opts.dir, `${Date.now()}-${randomUUID()}${this.opts.suffix}`);
  }

  /**
   * A ready file, or undefined when none is (the caller opens its own). Either way the pool starts
   * making the next ones.
   */
  take(): PooledTempFile | undefined {
    const now = Date.now();
    let file: Ready | undefined;
    while ((file = this.ready.shift()) !== undefined) {
      if (now - file.createdAt < this.opts.maxAgeMs && isLinked(file.fd)) break;
      void this.release(file);
    }
    this.failing = false;
    this.fill();
    return file === undefined ? undefined : { path: file.path, fd: file.fd };
  }

  /** True while `file` waits in the pool (the staging sweep leaves it alone). */
  holds(file: string): boolean {
    return this.ready.some((r) => r.path === file);
  }

  /** Starts opens until `size` files are ready or opening. Never throws. */
  fill(): void {
    while (!this.closed && !this.failing && this.ready.length + this.opening.size < this.opts.size) {
      const file = this.newPath();
      const opened = new Promise<void>((resolve) => {
        openFd(file, 'wx', this.opts.mode, (err, fd) => {
          if (err) {
            // Whoever takes next opens its own file, and its association hears of the error.
            this.failing = true;
            return resolve();
          }
          const ready = { path: file, fd, createdAt: Date.now() };
          if (this.closed) return void this.release(ready).then(resolve);
          this.ready.push(ready);
          resolve();
        });
      });
      this.opening.add(opened);
      void opened.then(() => this.opening.delete(opened));
    }
  }

  /** Closes and removes every ready file, once the opens running now are done; no more are made. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.opening]);
    const files = this.ready.splice(0);
    await Promise.all(files.map((f) => this.release(f)));
  }

  /** Names (not paths) of the files waiting in the pool. */
  readyNames(): string[] {
    return this.ready.map((r) => path.basename(r.path));
  }

  private async release(file: PooledTempFile): Promise<void> {
    await new Promise<void>((resolve) => closeFd(file.fd, () => resolve()));
    await unlink(file.path).catch(() => undefined);
  }
}

/**
 * Whether the file still has a name: one removed while it waited (the staging directory cleared or made
 * again, an operator's cleanup) could be written and synced, but never renamed into the spool.
 */
function isLinked(fd: number): boolean {
  try {
    return fstatSync(fd).nlink > 0;
  } catch {
    return false;
  }
}
