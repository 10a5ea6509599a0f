// Folder destination: <path>/<StudyUID>/<SOPInstanceUID>.dcm, written atomically (temp file,
// fsync, rename, fsync of the directory), so readers never see a partial file and a re-delivery
// simply replaces the same file.
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import {
  checkDeliveryInput,
  TransientDeliveryError,
  type DeliveryMeta,
  type DeliveryReceipt,
  type Destination,
} from '../destination.ts';
import { errorMessage } from '../../observability/error-message.ts';

export class FolderDestination implements Destination {
  readonly kind = 'folder';
  readonly root: string;

  constructor(
    readonly name: string,
    root: string,
  ) {
    this.root = path.resolve(root);
  }

  async deliver(part10: Buffer, meta: DeliveryMeta): Promise<DeliveryReceipt> {
    // UIDs are validated (digits and dots only) before they become path components.
    const { studyUid, sopInstanceUid } = checkDeliveryInput(this.name, part10, meta);
    const dir = path.join(this.root, studyUid);
    const target = path.join(dir, `${sopInstanceUid}.dcm`);
    const temp = path.join(dir, `.${sopInstanceUid}.${randomBytes(6).toString('hex')}.tmp`);
    try {
      await mkdir(dir, { recursive: true });
      const fh = await open(temp, 'wx', 0o640);
      try {
        await fh.writeFile(part10);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(temp, target);
      await syncDir(dir);
    } catch (e) {
      await rm(temp, { force: true }).catch(() => undefined);
      // Disk full, I/O errors, permissions an operator can fix: retry later rather than drop.
      throw new TransientDeliveryError(
        `folder ${this.name}: writing ${sopInstanceUid} failed: ${errorMessage(e)}`,
        this.name,
        undefined,
        undefined,
        { cause: e },
      );
    }
    // The receipt (a job's return value in Redis) names the object relative to the folder, never by host
    // path: Redis is shared by nodes on other machines.
    const location = `folder://${this.name}/${studyUid}/${sopInstanceUid}.dcm`;
    return { destination: this.name, kind: this.kind, location, warnings: [] };
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
