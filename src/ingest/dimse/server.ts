// Starts the DIMSE front door: dcmjs-dimse Servers (plain TCP, and DICOM TLS when configured) whose
// per-connection SCP streams C-STOREs into the object store through the shared InstanceAcceptor.
import type { Server as NetServer, Socket } from 'node:net';
import dimse from 'dcmjs-dimse';
import {
  IMPLEMENTATION_CLASS_UID,
  IMPLEMENTATION_VERSION_NAME,
  normaliseAeTitle,
} from '../../dicom/part10.ts';
import { dimseLimitsSchema } from '../../config/schema.ts';
import { InstanceAcceptor } from '../accept.ts';
import { DiskWatermark } from '../../storage/disk-watermark.ts';
import { AssociationPolicy } from './association-policy.ts';
import * as events from './events.ts';
import { DEFAULT_ASSOCIATE_LIMIT, DEFAULT_COMMAND_LIMIT } from './pdu-guard.ts';
import { createScpClass, type ScpContext } from './scp.ts';
import type { DimseLimits, DimseServer, DimseServerOptions } from './types.ts';

const { Server, Implementation } = dimse;

/** The configuration's defaults, for servers started without one (tests, tools). */
const DEFAULT_LIMITS: DimseLimits = dimseLimitsSchema.parse({});

/** Bare TCP connections beyond the association limit (probes, half-open) are refused by the kernel queue. */
const EXTRA_CONNECTIONS = 16;
/** Slack over our advertised max PDU for senders that count the PDV headers in, or round up. */
const PDU_SLACK = 1024;

type ListenOptions = NonNullable<Parameters<InstanceType<typeof Server>['listen']>[1]>;

export async function startDimseServer(opts: DimseServerOptions): Promise<DimseServer> {
  const aeTitle = normaliseAeTitle(opts.aeTitle);
  if (aeTitle === undefined) throw new Error(`invalid AE title: ${JSON.stringify(opts.aeTitle)}`);
  if (!Number.isInteger(opts.maxPduLength) || opts.maxPduLength < 4096) {
    throw new Error(`invalid maxPduLength: ${opts.maxPduLength}`);
  }
  if (opts.tls?.requireClientCert && opts.tls.ca === undefined) {
    // Node would otherwise verify client certificates against the public CAs: anyone could buy one.
    throw new Error(
      'DICOM TLS requireClientCert needs a CA (dimse.tls.caFile) to verify client certificates',
    );
  }
  const limits: DimseLimits = { ...DEFAULT_LIMITS, ...opts.limits };
  const disk = new DiskWatermark(opts.dataDir, opts.minFreeBytes ?? 0);
  await disk.refresh();

  // The library logs every PDU at info level by default; its warnings and errors are enough.
  dimse.log.setLevel('warn');
  // Process-wide identity of our DICOM implementation (also used by any dcmjs-dimse SCU in this process).
  Implementation.setImplementationClassUid(IMPLEMENTATION_CLASS_UID);
  Implementation.setImplementationVersion(IMPLEMENTATION_VERSION_NAME);
  // The library caps the advertised PDU at this global; raise it (never lower it) to honour our setting.
  if (opts.maxPduLength > Implementation.getMaxPduLength()) Implementation.setMaxPduLength(opts.maxPduLength);

  const ctx: ScpContext = {
    maxPduLength: opts.maxPduLength,
    acceptor: new InstanceAcceptor({ store: opts.store, onStored: opts.onStored, disk }),
    policy: new AssociationPolicy({
      aeTitle,
      peers: opts.peers ?? [],
      promiscuous: opts.promiscuous,
      maxAssociations: limits.maxAssociations,
      maxAssociationsPerPeer: limits.maxAssociationsPerPeer,
      userIdentity: opts.userIdentity ?? { required: false, users: [] },
      ...(opts.slots !== undefined ? { slots: opts.slots } : {}),
    }),
    pduLimits: {
      maxPDataLength: opts.maxPduLength + PDU_SLACK,
      maxAssociateLength: DEFAULT_ASSOCIATE_LIMIT,
      maxCommandBytes: DEFAULT_COMMAND_LIMIT,
    },
    maxInstanceBytes: opts.maxInstanceBytes ?? Number.MAX_SAFE_INTEGER,
    associationTimeoutMs: limits.associationTimeoutMs,
    onAssociationClosed: opts.onAssociationClosed,
    ...(opts.mpps !== undefined ? { mpps: opts.mpps } : {}),
    inflight: new Set(),
    sockets: new Set<Socket>(),
  };
  const timeouts: ListenOptions = {
    associationTimeout: limits.associationTimeoutMs,
    pduTimeout: limits.idleTimeoutMs,
  };

  const listeners: NetServer[] = [];
  const stopAll = () => {
    for (const l of listeners) l.close();
  };
  let port: number;
  let tlsPort: number | undefined;
  try {
    port = await listen(ctx, opts.host, opts.port, timeouts, limits, listeners);
    events.listening(opts.host, port, aeTitle);
    if (opts.tls !== undefined) {
      const { tls } = opts;
      tlsPort = await listen(
        ctx,
        opts.host,
        tls.port,
        {
          ...timeouts,
          securityOptions: {
            cert: tls.cert,
            key: tls.key,
            ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
            requestCert: tls.requireClientCert,
            rejectUnauthorized: tls.requireClientCert,
            minVersion: 'TLSv1.2',
          },
        },
        limits,
        listeners,
      );
      events.listeningTls(opts.host, tlsPort, tls.requireClientCert);
    }
  } catch (err) {
    stopAll();
    throw err;
  }

  let closing: Promise<void> | undefined;
  return {
    port,
    ...(tlsPort !== undefined ? { tlsPort } : {}),
    close(): Promise<void> {
      closing ??= (async () => {
        const closed = listeners.map((l) => new Promise<void>((resolve) => l.once('close', () => resolve())));
        stopAll();
        for (const socket of ctx.sockets) socket.destroy();
        await Promise.all(closed);
        // Let stores that were already running finish writing or cleaning up before we return.
        while (ctx.inflight.size > 0) await Promise.allSettled([...ctx.inflight]);
      })();
      return closing;
    },
  };
}

async function listen(
  ctx: ScpContext,
  host: string,
  port: number,
  options: ListenOptions,
  limits: DimseLimits,
  listeners: NetServer[],
): Promise<number> {
  const server = new Server(createScpClass(ctx));
  await new Promise<void>((resolve, reject) => {
    const onError = (err: unknown) => reject(err instanceof Error ? err : new Error(String(err)));
    server.once('networkError', onError);
    server.once('listening', () => {
      server.off('networkError', onError);
      resolve();
    });
    // Server.listen hands its first argument to net.Server.listen, which also takes { port, host }.
    server.listen({ port, host } as unknown as number, options);
  });
  server.on('networkError', (err: unknown) => events.networkError({}, err));

  // dcmjs-dimse keeps the net.Server in a field it does not declare; we need it for the port and for close().
  const inner = (server as unknown as { server?: NetServer }).server;
  const address = inner?.address();
  if (inner === undefined || address === null || address === undefined || typeof address === 'string') {
    server.close();
    throw new Error('DIMSE server has no TCP address');
  }
  inner.maxConnections = limits.maxAssociations + EXTRA_CONNECTIONS;
  listeners.push(inner);
  return address.port;
}
