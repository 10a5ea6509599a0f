// The one place a backend is chosen. Zero configuration means the filesystem under <dataDir>, exactly as
// before the seam; the S3 backend adds its branch here (storage.backend: s3) with its settings.
import type { GatewayConfig } from '../config/schema.ts';
import { FilesystemObjectStore } from './filesystem-store.ts';
import type { ObjectStore } from './object-store.ts';

export function createObjectStore(config: Pick<GatewayConfig, 'dataDir'>): ObjectStore {
  // storage.backend: s3 → new S3ObjectStore(config.storage.s3) goes here.
  return new FilesystemObjectStore(config.dataDir);
}
