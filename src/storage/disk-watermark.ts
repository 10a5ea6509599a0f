// Free-disk watermark of the local data disk (dataDir). Below it, new instances are refused (C-STORE 0xA700,
// STOW-RS 409/503) instead of filling the disk that already holds studies other senders are waiting on. With
// the filesystem store that is where instances go; with an object-storage backend it watches the local
// staging/cache disk only (docs/storage.md).
import { statfs } from 'node:fs/promises';

/** How long one statfs answer is trusted: cheap enough per instance, fresh enough to stop a flood. */
const REFRESH_MS = 1000;

/** Free bytes on the disk holding `dir`, available to this process. */
export async function freeBytesOf(dir: string): Promise<number> {
  const fs = await statfs(dir);
  return fs.bavail * fs.bsize;
}

export class DiskWatermark {
  private freeBytes = Number.POSITIVE_INFINITY;
  private checkedAt = 0;
  private refreshing: Promise<void> | undefined;

  constructor(
    private readonly dir: string,
    readonly minFreeBytes: number,
  ) {}

  /** Measures now; call once at start-up so the synchronous check has a real figure. */
  async refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        this.freeBytes = await freeBytesOf(this.dir);
      } catch {
        // An unreadable spool directory fails every commit anyway; count it as full so nothing is accepted.
        this.freeBytes = 0;
      } finally {
        this.checkedAt = Date.now();
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  /** Synchronous answer from the last measurement (at most REFRESH_MS old); starts a new one when stale. */
  isBelow(): boolean {
    if (Date.now() - this.checkedAt > REFRESH_MS) void this.refresh();
    return this.freeBytes < this.minFreeBytes;
  }

  /** Fresh measurement, for callers that can wait. */
  async isBelowNow(): Promise<boolean> {
    if (Date.now() - this.checkedAt > REFRESH_MS) await this.refresh();
    return this.freeBytes < this.minFreeBytes;
  }
}
