import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { loadConfig } from '../../../src/config/load.ts';
import { ensureRedis, RedisUnavailableError } from '../../../src/pipeline/redis.ts';
import { freePort } from '../../helpers/dicom-tools.ts';

test('with no Redis answering, a private redis-server is started, persisting under the data directory', async () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'aigw-redis-'));
  const port = await freePort();
  const config = loadConfig({
    env: { GATEWAY_REDIS_URL: `redis://127.0.0.1:${port}`, GATEWAY_DATA_DIR: dataDir },
  });
  const handle = await ensureRedis(config);
  try {
    const client = new Redis(handle.target.url);
    assert.equal(await client.ping(), 'PONG');
    await client.set('k', 'v');
    assert.equal(await client.config('GET', 'appendonly').then((r) => (r as string[])[1]), 'yes');
    client.disconnect();
    assert.ok(existsSync(path.join(dataDir, 'redis')));
  } finally {
    await handle.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('an existing Redis is used as it is, and stop() leaves it running', async () => {
  const handle = await ensureRedis(loadConfig({ env: {} }));
  await handle.stop();
  const client = new Redis(handle.target.url);
  assert.equal(await client.ping(), 'PONG');
  client.disconnect();
});

test('without redis-server installed, the error says exactly what is missing', async () => {
  const port = await freePort();
  const config = loadConfig({ env: { GATEWAY_REDIS_URL: `redis://127.0.0.1:${port}` } });
  const savedPath = process.env.PATH;
  process.env.PATH = '/nonexistent';
  try {
    await assert.rejects(
      ensureRedis(config),
      (e: Error) =>
        e instanceof RedisUnavailableError &&
        /no redis-server is installed/.test(e.message) &&
        /apt-get install redis-server/.test(e.message),
    );
  } finally {
    process.env.PATH = savedPath;
  }
});

test('with auto-start switched off, a Redis that does not answer is an error naming the URL', async () => {
  const port = await freePort();
  const config = loadConfig({
    env: { GATEWAY_REDIS_URL: `redis://127.0.0.1:${port}` },
    overrides: { 'redis.autoStart': false },
  });
  await assert.rejects(
    ensureRedis(config),
    (e: Error) =>
      e instanceof RedisUnavailableError && e.message.includes(`not answering at redis://127.0.0.1:${port}`),
  );
});
