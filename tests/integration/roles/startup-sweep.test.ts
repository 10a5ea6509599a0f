// Several gateways may share one spool directory. The start-up sweep of <dataDir>/spool/tmp must only
// remove temp files abandoned long ago (a crash), never another gateway's transfer in flight.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { loadConfig } from '../../../src/config/load.ts';
import { startRoles } from '../../../src/roles/start.ts';
import { Spool } from '../../../src/storage/spool.ts';
import { freePort } from '../../helpers/dicom-tools.ts';
import { REDIS_URL } from '../../helpers/gateway.ts';

test('a gateway start-up keeps a fresh temp file (another gateway transfer) and removes an old one', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'aigw-sweep-'));
  const prefix = `aigw-sweep-${randomBytes(4).toString('hex')}`;
  try {
    const config = loadConfig({
      env: {},
      overrides: {
        dataDir: path.join(dir, 'data'),
        modelsDir: path.join(dir, 'models'),
        'dimse.host': '127.0.0.1',
        'dimse.port': await freePort(),
        'http.port': await freePort(),
        'redis.url': REDIS_URL,
        'redis.prefix': prefix,
        'redis.autoStart': false,
      },
    });
    const spool = new Spool(config.dataDir);
    await spool.init();
    // Another gateway's transfer, written to a moment ago.
    const fresh = spool.newTempPath();
    await writeFile(fresh, 'in flight');
    // Left by a crash two hours ago.
    const abandoned = spool.newTempPath();
    await writeFile(abandoned, 'abandoned');
    const old = new Date(Date.now() - 2 * 3_600_000);
    await utimes(abandoned, old, old);

    const running = await startRoles('gateway', config);
    await running.close();

    assert.equal((await stat(fresh)).size, 'in flight'.length, 'the in-flight temp file survives');
    await assert.rejects(stat(abandoned), { code: 'ENOENT' }, 'the abandoned temp file is swept');
    assert.equal(config.spool.staleTempAfterMs, 3_600_000, 'documented default: one hour');
  } finally {
    const redis = new Redis(REDIS_URL);
    const k = await redis.keys(`${prefix}:*`);
    if (k.length) await redis.del(...k);
    redis.disconnect();
    await rm(dir, { recursive: true, force: true });
  }
});

test('spool.staleTempAfterMs may not be below twice the DIMSE idle timeout', () => {
  const c = loadConfig({ env: {}, overrides: { 'spool.staleTempAfterMs': 600_000 } });
  assert.equal(c.spool.staleTempAfterMs, 600_000);
  // Default idle timeout 120 s: a file untouched for 60 s may still belong to a live association.
  assert.throws(
    () => loadConfig({ env: {}, overrides: { 'spool.staleTempAfterMs': 60_000 } }),
    /spool\.staleTempAfterMs.*idleTimeoutMs/s,
  );
});
