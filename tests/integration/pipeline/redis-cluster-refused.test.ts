// Redis Cluster is refused at start-up with the reason (multi-key scripts and MULTI are not slot-safe),
// whether the configuration says so or the server does (INFO cluster: cluster_enabled:1).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { stringify } from 'yaml';
import { ConfigError, loadConfig } from '../../../src/config/load.ts';
import { RedisRefusedError } from '../../../src/pipeline/redis.ts';
import { startRoles } from '../../../src/roles/start.ts';
import { freePort } from '../../helpers/dicom-tools.ts';
import { REPO } from '../../helpers/gateway.ts';
import { startClusterNode } from '../../helpers/redis-topology.ts';

const REASON =
  /Redis Cluster is not supported: .*multi-key Lua scripts and MULTI transactions .*not slot-safe/s;

async function gatewayConfig(dir: string, redisUrl: string) {
  return {
    dataDir: path.join(dir, 'data'),
    modelsDir: path.join(dir, 'models'),
    dimse: { host: '127.0.0.1', port: await freePort() },
    http: { host: '127.0.0.1', port: await freePort() },
    redis: { url: redisUrl, prefix: 'aigw-cluster-test', autoStart: false },
  };
}

test('a gateway refuses a Redis Cluster node at start-up, in process and from the CLI', async () => {
  const node = await startClusterNode();
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-cluster-cfg-'));
  try {
    const settings = await gatewayConfig(dir, `redis://127.0.0.1:${node.port}`);
    const config = loadConfig({ env: {}, overrides: { ...settings } });
    await assert.rejects(startRoles('gateway', config), (err: unknown) => {
      assert.ok(err instanceof RedisRefusedError && err instanceof ConfigError, String(err));
      assert.match(err.message, /cluster_enabled:1/);
      assert.match(err.message, REASON);
      assert.match(err.message, /redis\.sentinels/);
      return true;
    });

    const configPath = path.join(dir, 'gateway.yaml');
    await writeFile(configPath, stringify(settings));
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', path.join(REPO, 'src/cli.ts'), 'gateway', '--config', configPath],
      { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    clearTimeout(timer);
    assert.equal(code, 1, stderr);
    assert.match(stderr, /^dicom-ai-gateway: redis:\/\/127\.0\.0\.1:\d+ is a Redis Cluster node/m);
    assert.match(stderr, REASON);
  } finally {
    await node.dispose();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a Cluster named in the configuration is refused before anything starts', () => {
  assert.throws(
    () => loadConfig({ env: { GATEWAY_REDIS_URL: 'redis+cluster://10.0.0.1:7000' } }),
    (err: unknown) => err instanceof ConfigError && REASON.test(err.message),
  );
  assert.throws(
    () => loadConfig({ env: {}, overrides: { 'redis.cluster': true } }),
    (err: unknown) => err instanceof ConfigError && REASON.test(err.message),
  );
  assert.throws(
    () => loadConfig({ env: {}, overrides: { 'redis.sentinels': [{ host: '127.0.0.1', port: 26379 }] } }),
    /redis\.sentinels and redis\.name go together/,
  );
});
