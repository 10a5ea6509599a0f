// Starts the DIMSE front door: a dcmjs-dimse Server whose per-connection SCP streams C-STOREs into the spool.
import type { Server as NetServer, Socket } from 'node:net';
import dimse from 'dcmjs-dimse';
import {
  IMPLEMENTATION_CLASS_UID,
  IMPLEMENTATION_VERSION_NAME,
  normaliseAeTitle,
} from '../../dicom/part10.ts';
import * as events from './events.ts';
import { createScpClass, type ScpContext } from './scp.ts';
import type { DimseServer, DimseServerOptions } from './types.ts';

const { Server, Implementation } = dimse;

export async function startDimseServer(opts: DimseServerOptions): Promise<DimseServer> {
  const aeTitle = normaliseAeTitle(opts.aeTitle);
  if (aeTitle === undefined) throw new Error(`invalid AE title: ${JSON.stringify(opts.aeTitle)}`);
  if (!Number.isInteger(opts.maxPduLength) || opts.maxPduLength < 4096) {
    throw new Error(`invalid maxPduLength: ${opts.maxPduLength}`);
  }
  await opts.spool.init();

  // The library logs every PDU at info level by default; its warnings and errors are enough.
  dimse.log.setLevel('warn');
  // Process-wide identity of our DICOM implementation (also used by any dcmjs-dimse SCU in this process).
  Implementation.setImplementationClassUid(IMPLEMENTATION_CLASS_UID);
  Implementation.setImplementationVersion(IMPLEMENTATION_VERSION_NAME);
  // The library caps the advertised PDU at this global; raise it (never lower it) to honour our setting.
  if (opts.maxPduLength > Implementation.getMaxPduLength()) Implementation.setMaxPduLength(opts.maxPduLength);

  const ctx: ScpContext = {
    aeTitle,
    maxPduLength: opts.maxPduLength,
    spool: opts.spool,
    onStored: opts.onStored,
    inflight: new Set(),
    sockets: new Set<Socket>(),
  };
  const server = new Server(createScpClass(ctx));

  await new Promise<void>((resolve, reject) => {
    const onError = (err: unknown) => reject(err instanceof Error ? err : new Error(String(err)));
    server.once('networkError', onError);
    server.once('listening', () => {
      server.off('networkError', onError);
      resolve();
    });
    // Server.listen hands its first argument to net.Server.listen, which also takes { port, host }.
    server.listen({ port: opts.port, host: opts.host } as unknown as number);
  });
  server.on('networkError', (err: unknown) => events.networkError({}, err));

  // dcmjs-dimse keeps the net.Server in a field it does not declare; we need it for the port and for close().
  const inner = (server as unknown as { server?: NetServer }).server;
  const address = inner?.address();
  if (address === null || address === undefined || typeof address === 'string') {
    server.close();
    throw new Error('DIMSE server has no TCP address');
  }
  events.listening(opts.host, address.port, aeTitle);

  let closing: Promise<void> | undefined;
  return {
    port: address.port,
    close(): Promise<void> {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => inner?.once('close', () => resolve()));
        server.close();
        for (const socket of ctx.sockets) socket.destroy();
        await closed;
        // Let stores that were already running finish writing or cleaning up before we return.
        while (ctx.inflight.size > 0) await Promise.allSettled([...ctx.inflight]);
      })();
      return closing;
    },
  };
}
