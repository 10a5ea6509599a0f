// Starts the ingest front doors from the configuration: the DIMSE SCP (plain and optional TLS) and the
// STOW-RS router, both feeding the same InstanceAcceptor path (object store commit, then onStored). Every
// association is also recorded in Redis for the admin console.
import { readFile } from 'node:fs/promises';
import type express from 'express';
import type { Redis } from 'ioredis';
import { AssociationSlots } from '../pipeline/association-slots.ts';
import type { GatewayConfig } from '../config/schema.ts';
import { keys, type AssociationRecord } from '../pipeline/keys.ts';
import { InstanceAcceptor, type OnStored } from './accept.ts';
import { DiskWatermark } from '../storage/disk-watermark.ts';
import { startDimseServer, type DimseServer, type MppsHandler } from './dimse/index.ts';
import * as dimseEvents from './dimse/events.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import { createStowRouter } from './stowrs/index.ts';

/** The admin console shows the latest associations; older ones are trimmed. */
export const ASSOCIATION_HISTORY = 500;

export interface IngestFrontDoors {
  dimse: DimseServer;
  /** Risky settings an admin chose explicitly, for /readyz (e.g. promiscuous DIMSE with a PACS destination). */
  warnings: string[];
  /** Mount with createAdminApp({ routers }); empty when STOW-RS is disabled. */
  routers: { path: string; router: express.Router }[];
  close(): Promise<void>;
}

/**
 * Who may open a DIMSE association: unknown calling AE titles are accepted (promiscuous) only when the admin
 * says so, or by default while nothing is configured at all (no peers, no PACS destination: a newcomer's
 * storescu just works). Once results go into a PACS, an open door would let any host on the network inject
 * studies there, so the default closes. An explicit `true` with a PACS destination stays, with a warning.
 */
export function dimseAdmission(config: GatewayConfig): { promiscuous: boolean; warnings: string[] } {
  const pacs = Object.entries(config.destinations)
    .filter(([, dest]) => dest.kind === 'dicomweb' || dest.kind === 'dimse')
    .map(([name]) => name);
  const explicit = config.dimse.promiscuous;
  const promiscuous = explicit ?? (config.dimse.peers.length === 0 && pacs.length === 0);
  const warnings =
    explicit === true && pacs.length > 0
      ? [
          `dimse.promiscuous is on with PACS destination(s) ${pacs.join(', ')}: any host that reaches the ` +
            `DIMSE port can store studies whose results go into the PACS; list the senders in dimse.peers`,
        ]
      : [];
  if (warnings.length > 0) dimseEvents.promiscuousWithPacs(pacs);
  return { promiscuous, warnings };
}

export async function startIngest(
  config: GatewayConfig,
  store: ObjectStore,
  onStored: OnStored,
  redis?: Redis,
  mpps?: MppsHandler,
): Promise<IngestFrontDoors> {
  const { dimse: d, spool: spoolSettings, stowrs } = config;
  const tls =
    d.tls === undefined
      ? undefined
      : {
          port: d.tls.port,
          cert: await readFile(d.tls.certFile),
          key: await readFile(d.tls.keyFile),
          ...(d.tls.caFile !== undefined ? { ca: await readFile(d.tls.caFile) } : {}),
          requireClientCert: d.tls.requireClientCert,
        };
  const admission = dimseAdmission(config);
  // Association limits across every gateway sharing this Redis, over the fail-fast ingest connection.
  const slots =
    redis !== undefined && d.limits.clusterWide
      ? new AssociationSlots({
          redis,
          prefix: config.redis.prefix,
          ttlMs: d.limits.clusterSlotTtlMs,
          timeoutMs: d.limits.clusterCheckTimeoutMs,
        })
      : undefined;
  const dimse = await startDimseServer({
    aeTitle: d.aeTitle,
    host: d.host,
    port: d.port,
    maxPduLength: d.maxPduLength,
    store,
    dataDir: config.dataDir,
    onStored,
    peers: d.peers,
    promiscuous: admission.promiscuous,
    limits: d.limits,
    userIdentity: d.userIdentity,
    ...(tls !== undefined ? { tls } : {}),
    minFreeBytes: spoolSettings.minFreeBytes,
    maxInstanceBytes: spoolSettings.maxInstanceBytes,
    onAssociationClosed: redis === undefined ? undefined : recordAssociation(redis, config.redis.prefix),
    ...(slots !== undefined ? { slots } : {}),
    ...(mpps !== undefined ? { mpps } : {}),
  });

  const routers: IngestFrontDoors['routers'] = [];
  if (stowrs.enabled) {
    // The local data disk (with S3: the staging disk only).
    const disk = new DiskWatermark(config.dataDir, spoolSettings.minFreeBytes);
    await disk.refresh();
    routers.push({
      path: '/dicomweb',
      router: createStowRouter({
        acceptor: new InstanceAcceptor({ store, onStored, disk }),
        maxRequestBytes: stowrs.maxRequestBytes,
        maxInstanceBytes: spoolSettings.maxInstanceBytes,
        ...(stowrs.auth !== undefined ? { auth: stowrs.auth } : {}),
      }),
    });
  }
  return {
    dimse,
    routers,
    warnings: admission.warnings,
    close: async () => {
      await dimse.close();
      slots?.close();
    },
  };
}

/** LPUSH + LTRIM of the association history; a Redis hiccup costs one record, never an association. */
export function recordAssociation(redis: Redis, prefix: string): (record: AssociationRecord) => void {
  const key = keys.associations(prefix);
  return (record) => {
    redis
      .multi()
      .lpush(key, JSON.stringify(record))
      .ltrim(key, 0, ASSOCIATION_HISTORY - 1)
      .exec()
      .catch((err: unknown) => dimseEvents.associationRecordFailed(err));
  };
}
