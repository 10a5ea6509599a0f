// An S3-compatible server for tests: s3rver in a child process on a loopback port, with its buckets in a
// temp directory. A child, so that stopping it is a real outage (connection refused) and so that the
// test process's RSS measures the client alone. Production points at MinIO, Ceph RGW or AWS S3, never
// s3rver (see docs/scale-out.md).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { S3Client } from '@aws-sdk/client-s3';
import { silenceSdkNodeVersionWarning } from '../../src/storage/s3-store.ts';

/** s3rver's fixed credentials. */
export const S3RVER_ACCESS_KEY_ID = 'S3RVER';
export const S3RVER_SECRET_ACCESS_KEY = 'S3RVER';

export interface S3TestServer {
  endpoint: string;
  port: number;
  /** The s3rver child's process id while it runs (its memory is the test server's, not the gateway's). */
  pid: number | undefined;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Where s3rver keeps its buckets. */
  directory: string;
  /** SIGTERM (SIGKILL after 3 s); the data directory stays, for start() again. */
  stop(): Promise<void>;
  /** Starts the server again on the same port and directory. */
  start(): Promise<void>;
  /** stop(), then removes the data directory. */
  dispose(): Promise<void>;
  /** How the server ended when nobody stopped it (exit code or signal, its stderr's tail); '' while it runs. */
  unexpectedExit(): string;
}

// s3rver's filesystem store removes a folder as soon as its last object is deleted, racing a concurrent
// PutObject or CopyObject into that folder: the write stream then fails with ENOENT and, having no error
// handler, takes the whole server down (seen with 4 concurrent associations; S3 has no folders and no such
// race). The child deletes objects without pruning folders; empty folders list nothing.
const CHILD = `
const fsp = require('fs/promises');
const FilesystemStore = require('s3rver/lib/stores/filesystem');
FilesystemStore.prototype.deleteObject = async function (bucket, key) {
  await Promise.all(['object', 'object.md5', 'metadata.json'].map((type) =>
    fsp.unlink(this.getResourcePath(bucket, key, type)).catch((err) => {
      if (err.code !== 'ENOENT') throw err;
    }),
  ));
};
const S3rver = require('s3rver');
const cfg = JSON.parse(process.env.S3_TEST_SERVER);
const server = new S3rver({
  port: cfg.port,
  address: '127.0.0.1',
  silent: true,
  directory: cfg.directory,
  configureBuckets: cfg.buckets.map((name) => ({ name })),
});
server.run().then(
  (addr) => process.stdout.write('PORT ' + addr.port + '\\n'),
  (err) => { process.stderr.write(String(err && err.stack || err) + '\\n'); process.exit(1); },
);
process.on('SIGTERM', () => server.close().finally(() => process.exit(0)));
`;

export async function startS3Server(opts: { buckets?: string[] } = {}): Promise<S3TestServer> {
  const buckets = opts.buckets ?? ['dicom-ai-gateway'];
  const directory = mkdtempSync(path.join(tmpdir(), 'aigw-s3rver-'));
  let child: ChildProcess | undefined;
  let port = 0;
  // A failure message must say why the server went away, if it did without being stopped.
  let unexpected = '';

  const start = async (): Promise<void> => {
    // s3rver's ListObjectsV2 continuation tokens use DES, which OpenSSL 3 keeps in its legacy provider.
    const proc = spawn(process.execPath, ['--openssl-legacy-provider', '-e', CHILD], {
      cwd: path.resolve(import.meta.dirname, '../..'),
      env: { ...process.env, S3_TEST_SERVER: JSON.stringify({ port, directory, buckets }) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = proc;
    let stderr = '';
    proc.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    proc.once('exit', (code, signal) => {
      if (child === proc)
        unexpected = `s3rver exited unexpectedly (code ${code}, signal ${signal}): ${stderr}`;
    });
    port = await new Promise<number>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`s3rver did not start in 15 s: ${stderr}`)), 15_000);
      proc.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /PORT (\d+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      proc.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`s3rver exited with ${code}: ${stderr}`));
      });
    });
  };

  const stop = async (): Promise<void> => {
    const proc = child;
    child = undefined;
    if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 3_000);
    await exited;
    clearTimeout(timer);
  };

  await start();
  return {
    get endpoint() {
      return `http://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    get pid() {
      return child?.pid;
    },
    region: 'us-east-1',
    accessKeyId: S3RVER_ACCESS_KEY_ID,
    secretAccessKey: S3RVER_SECRET_ACCESS_KEY,
    directory,
    stop,
    start,
    unexpectedExit: () => unexpected,
    async dispose() {
      await stop();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}

/** A plain SDK client on the test server, to look at the bucket as it is (destroy() it after). */
export function s3TestClient(server: S3TestServer): S3Client {
  silenceSdkNodeVersionWarning();
  return new S3Client({
    region: server.region,
    endpoint: server.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
  });
}
