import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { errorMessage } from '../util/error-message.ts';
import { configSchema, S3_MAX_COPY_BYTES, type GatewayConfig } from './schema.ts';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** "host:port,host:port" → [{host, port}]; a malformed entry is left for the schema to reject. */
function parseSentinels(value: string): unknown {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s) => {
      const at = s.lastIndexOf(':');
      return at > 0 ? { host: s.slice(0, at), port: Number(s.slice(at + 1)) } : { host: s };
    });
}

/** Environment variables for the settings Docker users expect to set without a file. */
export const ENV_SETTINGS: Record<string, { path: string[]; parse: (v: string) => unknown }> = {
  GATEWAY_AE_TITLE: { path: ['dimse', 'aeTitle'], parse: String },
  GATEWAY_DIMSE_PORT: { path: ['dimse', 'port'], parse: Number },
  GATEWAY_HTTP_HOST: { path: ['http', 'host'], parse: String },
  GATEWAY_HTTP_PORT: { path: ['http', 'port'], parse: Number },
  GATEWAY_REDIS_URL: { path: ['redis', 'url'], parse: String },
  // Redis Sentinel: "host:port,host:port,…", the master name, and the passwords (from a Secret).
  GATEWAY_REDIS_SENTINELS: { path: ['redis', 'sentinels'], parse: parseSentinels },
  GATEWAY_REDIS_MASTER_NAME: { path: ['redis', 'name'], parse: String },
  GATEWAY_REDIS_PASSWORD: { path: ['redis', 'password'], parse: String },
  GATEWAY_REDIS_SENTINEL_PASSWORD: { path: ['redis', 'sentinelPassword'], parse: String },
  GATEWAY_DATA_DIR: { path: ['dataDir'], parse: String },
  GATEWAY_MODELS_DIR: { path: ['modelsDir'], parse: String },
  // Object storage: the backend, the bucket and where it is, and static credentials (from a Secret).
  GATEWAY_STORAGE_BACKEND: { path: ['storage', 'backend'], parse: String },
  GATEWAY_STORAGE_S3_BUCKET: { path: ['storage', 's3', 'bucket'], parse: String },
  GATEWAY_STORAGE_S3_ENDPOINT: { path: ['storage', 's3', 'endpoint'], parse: String },
  GATEWAY_STORAGE_S3_REGION: { path: ['storage', 's3', 'region'], parse: String },
  GATEWAY_STORAGE_S3_PREFIX: { path: ['storage', 's3', 'prefix'], parse: String },
  GATEWAY_STORAGE_S3_ACCESS_KEY_ID: { path: ['storage', 's3', 'accessKeyId'], parse: String },
  GATEWAY_STORAGE_S3_SECRET_ACCESS_KEY: { path: ['storage', 's3', 'secretAccessKey'], parse: String },
  GATEWAY_QUIET_PERIOD_MS: { path: ['study', 'quietPeriodMs'], parse: Number },
  GATEWAY_WORKER_CONCURRENCY: { path: ['worker', 'concurrency'], parse: Number },
  GATEWAY_WORKER_DECODE_THREADS: { path: ['worker', 'decodeThreads'], parse: Number },
  GATEWAY_WORKER_INTRA_OP_THREADS: { path: ['worker', 'intraOpThreads'], parse: Number },
  GATEWAY_WORKER_HTTP_PORT: { path: ['worker', 'httpPort'], parse: Number },
};

/** One admin bearer token, for containers whose admin HTTP binds beyond loopback; added to the configured ones. */
export const ENV_ADMIN_TOKEN = 'GATEWAY_ADMIN_TOKEN';

/** The DICOMweb URL of the default destination; becomes destination 'pacs'. */
export const ENV_DICOMWEB_URL = 'GATEWAY_DICOMWEB_URL';

export interface LoadOptions {
  configPath?: string;
  env?: NodeJS.ProcessEnv;
  /** Applied last; tests use it to set ports and directories. */
  overrides?: Record<string, unknown>;
}

export function loadConfig(opts: LoadOptions = {}): GatewayConfig {
  const env = opts.env ?? process.env;
  const configPath = opts.configPath ?? env.GATEWAY_CONFIG;
  let raw: Record<string, unknown> = {};
  let baseDir = process.cwd();
  if (configPath) {
    let text: string;
    try {
      text = readFileSync(configPath, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read config file ${configPath}: ${errorMessage(err)}`);
    }
    try {
      raw = (parseYaml(text) as Record<string, unknown> | null) ?? {};
    } catch (err) {
      throw new ConfigError(`config file ${configPath} is not valid YAML: ${errorMessage(err)}`);
    }
    if (typeof raw !== 'object' || Array.isArray(raw))
      throw new ConfigError(`config file ${configPath} must hold a mapping`);
    baseDir = path.dirname(path.resolve(configPath));
  }
  for (const [name, setting] of Object.entries(ENV_SETTINGS)) {
    const value = env[name];
    if (value !== undefined && value !== '') setPath(raw, setting.path, setting.parse(value));
  }
  const adminToken = env[ENV_ADMIN_TOKEN];
  if (adminToken) addAdminToken(raw, adminToken);
  const dicomwebUrl = env[ENV_DICOMWEB_URL];
  if (dicomwebUrl) {
    setPath(raw, ['destinations', 'pacs'], { kind: 'dicomweb', url: dicomwebUrl });
    if (!('defaultDestination' in raw)) raw.defaultDestination = 'pacs';
  }
  for (const [key, value] of Object.entries(opts.overrides ?? {})) setPath(raw, key.split('.'), value);

  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  - ${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new ConfigError(
      `invalid configuration${configPath ? ` in ${configPath}` : ''}:\n${lines.join('\n')}`,
    );
  }
  const config = parsed.data;
  // Relative paths in a config file are relative to that file, as admins expect.
  config.dataDir = path.resolve(baseDir, config.dataDir);
  config.modelsDir = path.resolve(baseDir, config.modelsDir);
  const resolveTlsFiles = (tls: { caFile?: string; certFile?: string; keyFile?: string } | undefined) => {
    for (const k of ['caFile', 'certFile', 'keyFile'] as const) {
      const file = tls?.[k];
      if (tls && file) tls[k] = path.resolve(baseDir, file);
    }
  };
  resolveTlsFiles(config.dimse.tls);
  resolveTlsFiles(config.http.tls);
  for (const dest of Object.values(config.destinations)) {
    if (dest.kind === 'folder') dest.path = path.resolve(baseDir, dest.path);
    if (dest.kind === 'dicomweb' && dest.caFile) dest.caFile = path.resolve(baseDir, dest.caFile);
    if (dest.kind === 'dimse') resolveTlsFiles(dest.tls);
  }
  if (config.http.tls?.requireClientCert && config.http.tls.caFile === undefined)
    throw new ConfigError(
      'http.tls.requireClientCert needs http.tls.caFile (the CA client certificates must chain to)',
    );
  const dimseTls = config.dimse.tls;
  if (dimseTls?.requireClientCert && dimseTls.caFile === undefined) {
    // Without a CA of its own, Node would accept any certificate a public CA signed.
    throw new ConfigError(
      "dimse.tls.requireClientCert needs dimse.tls.caFile: the CA that signs your clients' certificates",
    );
  }
  const bound = config.dimse.peers.filter((p) => p.certificateCN !== undefined).map((p) => p.aeTitle);
  if (bound.length > 0 && !dimseTls?.requireClientCert) {
    throw new ConfigError(
      `dimse.peers[].certificateCN (set for ${bound.join(', ')}) needs dimse.tls with requireClientCert: true ` +
        'and caFile',
    );
  }
  // A transfer's temp file is written to at least once per idle timeout while its association lives.
  const minStaleMs = 2 * config.dimse.limits.idleTimeoutMs;
  if (config.spool.staleTempAfterMs < minStaleMs) {
    throw new ConfigError(
      `spool.staleTempAfterMs (${config.spool.staleTempAfterMs}) must be at least twice ` +
        `dimse.limits.idleTimeoutMs (${minStaleMs}): a younger temp file may be a live transfer`,
    );
  }
  if (config.storage.backend === 's3' && config.spool.maxInstanceBytes > S3_MAX_COPY_BYTES) {
    // A staged write becomes visible by one server-side CopyObject, which S3 limits to 5 GiB.
    throw new ConfigError(
      `spool.maxInstanceBytes (${config.spool.maxInstanceBytes}) must be at most ${S3_MAX_COPY_BYTES} (5 GiB) ` +
        'with storage.backend s3: larger objects cannot be committed by one server-side copy',
    );
  }
  if (config.defaultDestination && !config.destinations[config.defaultDestination]) {
    throw new ConfigError(
      `defaultDestination '${config.defaultDestination}' is not a configured destination`,
    );
  }
  for (const rule of config.routing.rules) {
    for (const d of rule.destinations) {
      if (!config.destinations[d] && d !== LOCAL_FOLDER_DESTINATION) {
        throw new ConfigError(`routing rule '${rule.name}' names unknown destination '${d}'`);
      }
    }
  }
  return config;
}

/** Built-in folder destination used when no PACS is configured. */
export const LOCAL_FOLDER_DESTINATION = 'local-folder';

function addAdminToken(raw: Record<string, unknown>, token: string): void {
  const entry = { name: 'env-admin', token, role: 'admin' };
  const http = (raw.http ??= {}) as Record<string, unknown>;
  if (typeof http !== 'object' || http === null) return; // the schema reports the bad type
  const auth = (http.auth ??= {}) as Record<string, unknown>;
  if (typeof auth !== 'object' || auth === null) return;
  auth.bearer = Array.isArray(auth.bearer) ? [...(auth.bearer as unknown[]), entry] : [entry];
}

function setPath(target: Record<string, unknown>, keys: string[], value: unknown): void {
  let node = target;
  for (const key of keys.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== 'object' || next === null) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[keys[keys.length - 1]!] = value;
}
