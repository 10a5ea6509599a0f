// docker-compose.yml, checked by Debian's docker-compose (`config` validates the file against the Compose
// schema without a Docker daemon): it is valid, the default services are the zero-config single machine,
// and the optional profiles (GPU worker, demo Orthanc, MinIO) are what they say.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { runTool } from '../../helpers/dicom-tools.ts';
import { REPO } from '../../helpers/gateway.ts';
import { loadConfig } from '../../../src/config/load.ts';

const COMPOSE = path.join(REPO, 'docker-compose.yml');
const ENV = { ...process.env, GATEWAY_ADMIN_TOKEN: 'compose-test-token-0123456789' };

function compose(file: string, args: string[], env: NodeJS.ProcessEnv = ENV) {
  // --project-directory: relative paths (build: ., ./models) resolve against the repository.
  return runTool('docker-compose', ['-f', file, '--project-directory', REPO, ...args], {
    env,
    timeoutMs: 60_000,
  });
}

interface Service {
  image?: string;
  build?: unknown;
  command?: string[];
  profiles?: string[];
  environment?: Record<string, string>;
  deploy?: { resources?: { reservations?: { devices?: { driver?: string; capabilities?: string[] }[] } } };
  ports?: unknown[];
}

test('docker-compose.yml is valid Compose (docker-compose config -q), and an invalid one is refused', async () => {
  const version = await runTool('docker-compose', ['version', '--short']).catch(() => undefined);
  assert.ok(version?.code === 0, 'docker-compose is not installed (Debian: apt-get install docker-compose)');
  const ok = await compose(COMPOSE, ['config', '-q']);
  assert.equal(ok.code, 0, ok.stderr);
  // Without the admin token the file refuses to start, saying why.
  const { GATEWAY_ADMIN_TOKEN: _, ...noToken } = ENV;
  const refused = await compose(COMPOSE, ['config', '-q'], noToken);
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /set GATEWAY_ADMIN_TOKEN/);
  // The check is real: a misspelt key under deploy is refused.
  const dir = mkdtempSync(path.join(tmpdir(), 'aigw-compose-'));
  try {
    const bad = path.join(dir, 'docker-compose.yml');
    writeFileSync(bad, readFileSync(COMPOSE, 'utf8').replace('reservations:', 'reservation:'));
    const r = await compose(bad, ['config', '-q']);
    assert.notEqual(r.code, 0, 'a misspelt key passed');
    assert.match(r.stderr, /reservation/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('default services are the single machine; GPU worker, demo Orthanc and MinIO are optional profiles', async () => {
  const out = await compose(COMPOSE, ['config']);
  assert.equal(out.code, 0, out.stderr);
  const services = (parse(out.stdout) as { services: Record<string, Service> }).services;
  const byDefault = Object.entries(services)
    .filter(([, s]) => !s.profiles?.length)
    .map(([n]) => n)
    .sort();
  assert.deepEqual(byDefault, ['gateway', 'redis', 'worker']);
  assert.deepEqual(services.gateway!.command, ['gateway']);
  assert.deepEqual(services.worker!.command, ['worker']);

  const gpu = services['worker-gpu']!;
  assert.deepEqual(gpu.profiles, ['gpu']);
  assert.deepEqual(gpu.command, ['worker']);
  const devices = gpu.deploy?.resources?.reservations?.devices ?? [];
  assert.deepEqual(
    devices.map((d) => [d.driver, d.capabilities]),
    [['nvidia', ['gpu']]],
  );
  assert.equal(gpu.environment?.GATEWAY_REDIS_URL, services.worker!.environment?.GATEWAY_REDIS_URL);

  assert.deepEqual(services.orthanc!.profiles, ['demo']);
  assert.match(services.orthanc!.image ?? '', /^orthancteam\/orthanc:/);
  assert.deepEqual(services.minio!.profiles, ['s3']);
  assert.match(services.minio!.image ?? '', /^minio\/minio:/);
  // Optional services listen on loopback only.
  for (const name of ['orthanc', 'minio']) {
    for (const p of services[name]!.ports ?? []) {
      const hostIp = typeof p === 'string' ? p.split(':')[0] : (p as { host_ip?: string }).host_ip;
      assert.equal(hostIp, '127.0.0.1', `${name} publishes ${JSON.stringify(p)} beyond loopback`);
    }
  }
  assert.deepEqual(services['minio-init']!.profiles, ['s3']);
});

/** The gateway's configuration as it loads from the environment compose gives the service. */
async function composedConfig(service: string, env: NodeJS.ProcessEnv) {
  const out = await compose(COMPOSE, ['config'], { ...ENV, ...env });
  assert.equal(out.code, 0, out.stderr);
  const services = (parse(out.stdout) as { services: Record<string, Service> }).services;
  const environment = services[service]!.environment ?? {};
  return { config: loadConfig({ env: environment }), services };
}

test('the storage backend: filesystem by default, MinIO of the s3 profile with GATEWAY_STORAGE_BACKEND=s3', async () => {
  const storageVars = Object.keys(process.env).filter((k) => k.startsWith('GATEWAY_STORAGE_'));
  const clean = Object.fromEntries(storageVars.map((k) => [k, undefined]));
  for (const name of ['gateway', 'worker', 'worker-gpu']) {
    const { config } = await composedConfig(name, { ...clean, MINIO_ROOT_PASSWORD: undefined });
    assert.equal(config.storage.backend, 'filesystem', name);
    assert.equal(config.dataDir, '/data', name);
  }
  const s3Env = {
    ...clean,
    MINIO_ROOT_PASSWORD: 'compose-test-minio-secret',
    GATEWAY_STORAGE_BACKEND: 's3',
    GATEWAY_STORAGE_S3_ACCESS_KEY_ID: 'aigw',
    GATEWAY_STORAGE_S3_SECRET_ACCESS_KEY: 'compose-test-minio-secret',
  };
  for (const name of ['gateway', 'worker', 'worker-gpu']) {
    const { config, services } = await composedConfig(name, s3Env);
    assert.equal(config.storage.backend, 's3', name);
    assert.equal(config.storage.s3?.endpoint, 'http://minio:9000', name);
    assert.equal(config.storage.s3?.accessKeyId, 'aigw', name);
    assert.equal(config.storage.s3?.secretAccessKey, 'compose-test-minio-secret', name);
    // The bucket the init service creates is the one the gateway uses.
    assert.equal(services['minio-init']!.environment?.BUCKET, config.storage.s3?.bucket, name);
    assert.equal(services.minio!.environment?.MINIO_ROOT_USER, 'aigw');
  }
  // Another S3 server: an empty endpoint means AWS S3 for the region.
  const { config: aws } = await composedConfig('gateway', {
    ...s3Env,
    GATEWAY_STORAGE_S3_ENDPOINT: '',
    GATEWAY_STORAGE_S3_BUCKET: 'site-a-bucket',
  });
  assert.equal(aws.storage.s3?.endpoint, undefined);
  assert.equal(aws.storage.s3?.bucket, 'site-a-bucket');
});
