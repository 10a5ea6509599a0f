// The disk's own limit for what a durable receiver does per instance, with nothing else running: create a
// file, write 512 KiB, fdatasync, rename it into a directory and fsync that directory (the gateway's steps,
// without the network, the parsing or Redis), over 1 and 4 writers at once. A receiver far below this rate is
// held up by something other than the disk. Written with bare fs calls rather than through Spool or
// writeFileDurable: it is an anchor for the disk, so none of our code may be in it.
import { randomBytes } from 'node:crypto';
import { close, fdatasync, fsync, open, write } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const openFile = promisify(open);
const writeFile = promisify(write);
const syncData = promisify(fdatasync);
const syncAll = promisify(fsync);
const closeFile = promisify(close);

/** Durable 512 KiB files per second that `writers` concurrent writers reach in `dir` (removed after). */
export async function durableWriteFloor(dir: string, files: number, writers: number): Promise<number> {
  const tmp = path.join(dir, 'tmp');
  const final = path.join(dir, 'final');
  await mkdir(tmp, { recursive: true });
  await mkdir(final, { recursive: true });
  const data = randomBytes(512 * 1024);
  const finalDir = await openFile(final, 'r');
  let next = 0;
  const writer = async (): Promise<void> => {
    for (let i = next++; i < files; i = next++) {
      const temp = path.join(tmp, `${i}.part`);
      const fd = await openFile(temp, 'wx');
      try {
        await writeFile(fd, data, 0, data.length, null);
        await syncData(fd);
      } finally {
        await closeFile(fd);
      }
      await rename(temp, path.join(final, `${i}.dcm`));
      await syncAll(finalDir);
    }
  };
  const started = performance.now();
  try {
    await Promise.all(Array.from({ length: writers }, writer));
    return files / ((performance.now() - started) / 1000);
  } finally {
    await closeFile(finalDir);
    await rm(dir, { recursive: true, force: true });
  }
}
