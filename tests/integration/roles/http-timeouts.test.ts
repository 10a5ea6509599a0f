// The admin listener also receives STOW-RS uploads, up to stowrs.maxRequestBytes (8 GiB by default). Node's
// default requestTimeout (300 s) would cut any upload slower than 27 MiB/s; the gateway must give a whole
// request as long as its largest allowed body takes at 1 MiB/s, while a stalled connection still goes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { loadConfig } from '../../../src/config/load.ts';
import { startRoles } from '../../../src/roles/start.ts';
import { freePort } from '../../helpers/dicom-tools.ts';
import { REDIS_URL } from '../../helpers/gateway.ts';

/** The http.Server listening on `port` in this process (the gateway keeps it to itself). */
function listeningServer(port: number): Server | undefined {
  const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles();
  return handles.find((h): h is Server => {
    const s = h as Partial<Server>;
    if (typeof s.address !== 'function' || !('requestTimeout' in s)) return false;
    const a = s.address.call(h);
    return typeof a === 'object' && a !== null && a.port === port;
  });
}

for (const maxRequestBytes of [8 * 1024 ** 3, 64 * 1024 ** 2]) {
  test(`the gateway's HTTP server gives a ${maxRequestBytes} byte STOW-RS body time at 1 MiB/s`, async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'aigw-httpto-'));
    const prefix = `aigw-httpto-${randomBytes(4).toString('hex')}`;
    const httpPort = await freePort();
    try {
      const config = loadConfig({
        env: {},
        overrides: {
          dataDir: path.join(dir, 'data'),
          modelsDir: path.join(dir, 'models'),
          'dimse.host': '127.0.0.1',
          'dimse.port': await freePort(),
          'http.port': httpPort,
          'redis.url': REDIS_URL,
          'redis.prefix': prefix,
          'redis.autoStart': false,
          'stowrs.maxRequestBytes': maxRequestBytes,
        },
      });
      const running = await startRoles('gateway', config);
      try {
        const server = listeningServer(httpPort);
        assert.ok(server, 'the admin HTTP server is listening');
        const atOneMiBps = Math.ceil(maxRequestBytes / 1024 ** 2) * 1000;
        assert.ok(
          server.requestTimeout >= atOneMiBps,
          `requestTimeout ${server.requestTimeout} ms < ${atOneMiBps} ms for the largest body at 1 MiB/s`,
        );
        assert.ok(server.requestTimeout >= 300_000, 'never below the Node default');
        // Slow clients are still bounded: headers within a minute, and no silent connection for long.
        assert.ok(
          server.headersTimeout > 0 && server.headersTimeout <= 60_000,
          `headersTimeout ${server.headersTimeout}`,
        );
        assert.ok(server.timeout > 0 && server.timeout <= 300_000, `idle timeout ${server.timeout}`);
      } finally {
        await running.close();
      }
    } finally {
      const redis = new Redis(REDIS_URL);
      const k = await redis.keys(`${prefix}:*`);
      if (k.length) await redis.del(...k);
      redis.disconnect();
      await rm(dir, { recursive: true, force: true });
    }
  });
}
