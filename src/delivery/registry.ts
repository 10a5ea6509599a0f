// Builds the configured destinations. Each kind is one file with one factory; adding a kind means
// a new file, its schema entry in src/config/schema.ts and one line in FACTORIES.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { DestinationConfig, GatewayConfig } from '../config/schema.ts';
import { RESULTS_DIR } from '../storage/layout.ts';
import type { Destination } from './destination.ts';
import { DicomwebDestination } from './destinations/dicomweb.ts';
import { DimseDestination } from './destinations/dimse.ts';
import { FolderDestination } from './destinations/folder.ts';

/** Built-in destination: results under <dataDir>/results, used when no default is configured. */
import { LOCAL_FOLDER_DESTINATION } from '../config/load.ts';

export { LOCAL_FOLDER_DESTINATION };

interface FactoryContext {
  dataDir: string;
  /** Our own AE title: the default calling AE of C-STORE destinations. */
  aeTitle: string;
}

type Factory<K extends DestinationConfig['kind']> = (
  name: string,
  config: Extract<DestinationConfig, { kind: K }>,
  ctx: FactoryContext,
) => Destination;

const FACTORIES: { [K in DestinationConfig['kind']]: Factory<K> } = {
  dicomweb: (name, c) =>
    new DicomwebDestination(name, {
      url: c.url,
      timeoutMs: c.timeoutMs,
      headers: c.headers,
      auth: c.auth,
      // Read once at start-up: a missing CA file is a configuration error, reported before any study.
      ca: c.caFile ? readFileSync(c.caFile) : undefined,
    }),
  dimse: (name, c, ctx) =>
    new DimseDestination(name, {
      host: c.host,
      port: c.port,
      aeTitle: c.aeTitle,
      callingAeTitle: c.callingAeTitle ?? ctx.aeTitle,
      timeoutMs: c.timeoutMs,
      tls: c.tls,
    }),
  folder: (name, c) => new FolderDestination(name, path.resolve(c.path)),
};

function build<K extends DestinationConfig['kind']>(
  name: string,
  config: Extract<DestinationConfig, { kind: K }>,
  ctx: FactoryContext,
): Destination {
  const factory = FACTORIES[config.kind as K] as Factory<K> | undefined;
  if (!factory) throw new Error(`destination ${name}: unknown kind ${String(config.kind)}`);
  return factory(name, config, ctx);
}

export function createDestinations(config: GatewayConfig): Map<string, Destination> {
  const ctx: FactoryContext = { dataDir: path.resolve(config.dataDir), aeTitle: config.dimse.aeTitle };
  const map = new Map<string, Destination>();
  map.set(
    LOCAL_FOLDER_DESTINATION,
    new FolderDestination(LOCAL_FOLDER_DESTINATION, path.join(ctx.dataDir, RESULTS_DIR)),
  );
  // A configured destination of the same name replaces the built-in one.
  for (const [name, dc] of Object.entries(config.destinations)) map.set(name, build(name, dc, ctx));
  const def = defaultDestinationName(config);
  if (!map.has(def)) throw new Error(`defaultDestination ${def} is not a configured destination`);
  return map;
}

/**
 * The destinations createDestinations builds, without building them: the built-in local folder unless
 * one is configured under its name, then the configured ones (for the console).
 */
export function destinationSummaries(
  config: GatewayConfig,
): { name: string; kind: DestinationConfig['kind']; isDefault: boolean }[] {
  const def = defaultDestinationName(config);
  const list = Object.entries(config.destinations).map(([name, d]) => ({
    name,
    kind: d.kind,
    isDefault: name === def,
  }));
  if (!config.destinations[LOCAL_FOLDER_DESTINATION])
    list.unshift({
      name: LOCAL_FOLDER_DESTINATION,
      kind: 'folder',
      isDefault: def === LOCAL_FOLDER_DESTINATION,
    });
  return list;
}

export function defaultDestinationName(config: GatewayConfig): string {
  return config.defaultDestination ?? LOCAL_FOLDER_DESTINATION;
}
