import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { ConfigError, loadConfig } from '../../../src/config/load.ts';
import { REDACTED, redactSecrets } from '../../../src/config/redact.ts';

function yamlFile(text: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'aigw-config-'));
  const file = path.join(dir, 'gateway.yaml');
  writeFileSync(file, text);
  return file;
}

test('zero configuration gives the documented defaults', () => {
  const c = loadConfig({ env: {} });
  assert.equal(c.dimse.aeTitle, 'AIGATEWAY');
  assert.equal(c.dimse.port, 11112);
  assert.equal(c.http.host, '127.0.0.1');
  assert.equal(c.http.port, 8080);
  assert.equal(c.redis.url, 'redis://127.0.0.1:6379');
  assert.equal(c.study.quietPeriodMs, 10_000);
  assert.equal(c.dataDir, path.resolve('data'));
  assert.deepEqual(c.worker.executionProviders, ['cuda', 'cpu']);
  assert.equal(c.defaultDestination, undefined);
});

test('environment variables override the file, and relative paths resolve against the file', () => {
  const file = yamlFile('dimse:\n  aeTitle: FILEAE\n  port: 104\ndataDir: spool-here\n');
  const c = loadConfig({
    configPath: file,
    env: {
      GATEWAY_DIMSE_PORT: '4242',
      GATEWAY_HTTP_PORT: '9090',
      GATEWAY_REDIS_URL: 'redis://10.0.0.5:6380',
      GATEWAY_MODELS_DIR: '/opt/models',
      GATEWAY_QUIET_PERIOD_MS: '1000',
      GATEWAY_DICOMWEB_URL: 'http://pacs.example:8042/dicom-web',
    },
  });
  assert.equal(c.dimse.aeTitle, 'FILEAE');
  assert.equal(c.dimse.port, 4242);
  assert.equal(c.http.port, 9090);
  assert.equal(c.redis.url, 'redis://10.0.0.5:6380');
  assert.equal(c.modelsDir, '/opt/models');
  assert.equal(c.study.quietPeriodMs, 1000);
  assert.equal(c.dataDir, path.join(path.dirname(file), 'spool-here'));
  assert.deepEqual(c.destinations.pacs, {
    kind: 'dicomweb',
    url: 'http://pacs.example:8042/dicom-web',
    timeoutMs: 30_000,
    headers: {},
  });
  assert.equal(c.defaultDestination, 'pacs');
});

test('GATEWAY_CONFIG chooses the file', () => {
  const file = yamlFile('http:\n  port: 8181\n');
  assert.equal(loadConfig({ env: { GATEWAY_CONFIG: file } }).http.port, 8181);
});

test('a wrong setting is named in the error', () => {
  assert.throws(
    () => loadConfig({ env: { GATEWAY_DIMSE_PORT: '70000' } }),
    (e: Error) => e instanceof ConfigError && /dimse\.port/.test(e.message),
  );
  assert.throws(
    () => loadConfig({ configPath: yamlFile('dimse:\n  aeTitle: THIS_AE_TITLE_IS_TOO_LONG\n'), env: {} }),
    (e: Error) => e instanceof ConfigError && /dimse\.aeTitle/.test(e.message),
  );
  assert.throws(
    () => loadConfig({ configPath: yamlFile('dimse:\n  aetitle: X\n'), env: {} }),
    (e: Error) => e instanceof ConfigError && /aetitle/.test(e.message),
    'unknown keys are refused, so typos do not pass silently',
  );
  assert.throws(
    () =>
      loadConfig({
        configPath: yamlFile(
          'routing:\n  rules:\n    - name: r\n      models: [m]\n      destinations: [nowhere]\n',
        ),
        env: {},
      }),
    (e: Error) => e instanceof ConfigError && /nowhere/.test(e.message),
  );
  assert.throws(
    () => loadConfig({ configPath: '/nonexistent/gateway.yaml', env: {} }),
    /cannot read config file/,
  );
  assert.throws(() => loadConfig({ configPath: yamlFile('a: [1,\n'), env: {} }), /not valid YAML/);
});

test('worker threads: decode and ONNX Runtime thread counts from the environment, validated', () => {
  const c = loadConfig({
    env: { GATEWAY_WORKER_DECODE_THREADS: '0', GATEWAY_WORKER_INTRA_OP_THREADS: '3' },
  });
  assert.equal(c.worker.decodeThreads, 0);
  assert.equal(c.worker.intraOpThreads, 3);
  assert.equal(loadConfig({ env: {} }).worker.decodeThreads, undefined, 'unset: cores − 1 at start');
  assert.throws(
    () => loadConfig({ env: { GATEWAY_WORKER_INTRA_OP_THREADS: '0' } }),
    (err: unknown) => err instanceof ConfigError && /intraOpThreads/.test(err.message),
  );
});

test('GATEWAY_ADMIN_TOKEN adds an admin token beside the configured ones, replacing none', () => {
  const file = yamlFile(
    'http:\n  auth:\n    basic:\n      - { user: ops, password: ops-password-1, role: admin }\n' +
      '    bearer:\n      - { name: ci, token: ci-token-0123456789, role: read }\n',
  );
  const c = loadConfig({ configPath: file, env: { GATEWAY_ADMIN_TOKEN: 'env-token-0123456789' } });
  assert.deepEqual(c.http.auth?.bearer, [
    { name: 'ci', token: 'ci-token-0123456789', role: 'read' },
    { name: 'env-admin', token: 'env-token-0123456789', role: 'admin' },
  ]);
  assert.equal(c.http.auth?.basic.length, 1);
  // Alone, it is the only credential.
  const alone = loadConfig({ env: { GATEWAY_ADMIN_TOKEN: 'env-token-0123456789' } });
  assert.deepEqual(alone.http.auth?.bearer, [
    { name: 'env-admin', token: 'env-token-0123456789', role: 'admin' },
  ]);
});

test('Redis Sentinel from the environment: sentinels, master name and passwords, validated', () => {
  const c = loadConfig({
    env: {
      GATEWAY_REDIS_SENTINELS: 'sentinel-0.redis:26379, sentinel-1.redis:26380',
      GATEWAY_REDIS_MASTER_NAME: 'aigw',
      GATEWAY_REDIS_PASSWORD: 'master-password-1',
      GATEWAY_REDIS_SENTINEL_PASSWORD: 'sentinel-password-1',
    },
  });
  assert.deepEqual(c.redis.sentinels, [
    { host: 'sentinel-0.redis', port: 26379 },
    { host: 'sentinel-1.redis', port: 26380 },
  ]);
  assert.equal(c.redis.name, 'aigw');
  assert.equal(c.redis.password, 'master-password-1');
  assert.equal(c.redis.sentinelPassword, 'sentinel-password-1');
  assert.throws(
    () => loadConfig({ env: { GATEWAY_REDIS_SENTINELS: 'no-port', GATEWAY_REDIS_MASTER_NAME: 'aigw' } }),
    (err: unknown) => err instanceof ConfigError && /redis\.sentinels\.0\.port/.test(err.message),
  );
  assert.throws(
    () => loadConfig({ env: { GATEWAY_REDIS_SENTINELS: 'sentinel-0.redis:26379' } }),
    (err: unknown) =>
      err instanceof ConfigError && /redis\.sentinels and redis\.name go together/.test(err.message),
  );
});

test('storage: the filesystem by default; S3 from the file and the environment, secrets redacted', () => {
  const d = loadConfig({ env: {} });
  assert.equal(d.storage.backend, 'filesystem');
  assert.equal(d.storage.s3, undefined);

  const file = yamlFile(
    'storage:\n  backend: s3\n  s3:\n    bucket: dicom-ai-gateway\n    endpoint: http://minio:9000\n    prefix: site-a/\n',
  );
  const c = loadConfig({
    configPath: file,
    env: {
      GATEWAY_STORAGE_S3_ACCESS_KEY_ID: 'AKIAEXAMPLE',
      GATEWAY_STORAGE_S3_SECRET_ACCESS_KEY: 'super-secret-key-value',
      GATEWAY_STORAGE_S3_REGION: 'eu-west-1',
    },
  });
  assert.equal(c.storage.backend, 's3');
  assert.deepEqual(c.storage.s3, {
    bucket: 'dicom-ai-gateway',
    endpoint: 'http://minio:9000',
    region: 'eu-west-1',
    prefix: 'site-a/',
    accessKeyId: 'AKIAEXAMPLE',
    secretAccessKey: 'super-secret-key-value',
    partSizeBytes: 8 * 1024 * 1024,
    queueSize: 2,
    requestTimeoutMs: 10_000,
    connectTimeoutMs: 3_000,
    maxAttempts: 3,
  });
  const printed = JSON.stringify(redactSecrets(c));
  assert.ok(!printed.includes('super-secret-key-value'), 'config check never prints the secret key');
  const s3 = (redactSecrets(c) as { storage: { s3: Record<string, unknown> } }).storage.s3;
  assert.equal(s3.secretAccessKey, REDACTED);
  assert.equal(s3.accessKeyId, 'AKIAEXAMPLE', 'the key id names the credential, it is not one');

  const env = loadConfig({
    env: { GATEWAY_STORAGE_BACKEND: 's3', GATEWAY_STORAGE_S3_BUCKET: 'b-1', GATEWAY_STORAGE_S3_PREFIX: '' },
  });
  assert.equal(env.storage.s3?.bucket, 'b-1');
  assert.equal(env.storage.s3?.endpoint, undefined);
});

test('storage: an unusable S3 configuration is refused at load', () => {
  const refused = (overrides: Record<string, unknown>, message: RegExp) =>
    assert.throws(
      () => loadConfig({ env: {}, overrides }),
      (err: unknown) => err instanceof ConfigError && message.test(err.message),
    );
  refused({ 'storage.backend': 's3' }, /storage\.backend s3 needs storage\.s3/);
  refused(
    { 'storage.backend': 's3', 'storage.s3.bucket': 'b', 'storage.s3.prefix': 'site-a' },
    /ends with '\/'/,
  );
  refused({ 'storage.s3.bucket': 'bucket', 'storage.s3.prefix': '/a/' }, /no leading/);
  refused(
    { 'storage.s3.bucket': 'bucket', 'storage.s3.accessKeyId': 'AKIA' },
    /accessKeyId and secretAccessKey go together/,
  );
  refused({ 'storage.s3.bucket': 'bucket', 'storage.s3.endpoint': 'ftp://minio' }, /http:\/\/ or https:\/\//);
  refused({ 'storage.s3.bucket': 'bucket', 'storage.s3.partSizeBytes': 1024 }, /partSizeBytes/);
  refused(
    { 'storage.backend': 's3', 'storage.s3.bucket': 'bucket', 'spool.maxInstanceBytes': 6 * 1024 ** 3 },
    /at most 5368709120 \(5 GiB\) with storage\.backend s3/,
  );
  // The same limit is fine on the filesystem.
  loadConfig({ env: {}, overrides: { 'spool.maxInstanceBytes': 6 * 1024 ** 3 } });
});
