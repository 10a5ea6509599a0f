// The one place a backend is chosen. Zero configuration means the filesystem under <dataDir>, exactly as
// before the seam; storage.backend: s3 gives the S3 store of storage.s3. Storage does not import the
// configuration module (see tests/unit/architecture/import-graph.test.ts): the factories take the part of
// GatewayConfig they read, structurally, and the gateway's whole config fits.
import path from 'node:path';
import { FilesystemObjectStore } from './filesystem-store.ts';
import type { ObjectStore } from './object-store.ts';
import { S3ObjectStore, type S3StoreOptions } from './s3-store.ts';

/** storage.s3 of the gateway configuration (src/config/schema.ts). */
export type S3StorageSettings = Omit<S3StoreOptions, 'cacheDir'>;

export interface S3StoreConfig {
  dataDir: string;
  storage: { s3?: S3StorageSettings | undefined };
}

export interface ObjectStoreConfig {
  dataDir: string;
  storage?: { backend?: 'filesystem' | 's3'; s3?: S3StorageSettings | undefined };
}

/** The configured store: S3 when storage.backend is s3, else the filesystem under dataDir. */
export function createObjectStore(config: ObjectStoreConfig): ObjectStore {
  if (config.storage?.backend === 's3') return createS3ObjectStore({ ...config, storage: config.storage });
  return new FilesystemObjectStore(config.dataDir);
}

/** The S3 store of storage.s3; local copies go to <dataDir>/cache. Call init() before use. */
export function createS3ObjectStore(config: S3StoreConfig): S3ObjectStore {
  const s3 = config.storage.s3;
  if (s3 === undefined) throw new Error('storage.backend s3 needs storage.s3 (at least storage.s3.bucket)');
  return new S3ObjectStore({ ...s3, cacheDir: path.join(config.dataDir, 'cache') });
}
