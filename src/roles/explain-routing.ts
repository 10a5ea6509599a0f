// `dicom-ai-gateway routing explain`: the dry run from the command line. It composes the configuration,
// the models on disk and the routing stage's explainRouting over DICOM files (read header only) or over
// a study already in the spool (its instances from the study index).
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { GatewayConfig } from '../config/schema.ts';
import { readInstanceHeader } from '../dicom/part10.ts';
import { defaultDestinationName } from '../delivery/registry.ts';
import { loadModels } from '../models/registry.ts';
import { errorMessage } from '../observability/error-message.ts';
import type { InstanceRecord } from '../pipeline/instance-record.ts';
import { createRedis, redisTarget } from '../pipeline/redis.ts';
import { StudyIndex } from '../pipeline/study-index.ts';
import { explainRouting, formatExplanation, type RoutingExplanation } from '../routing/dry-run.ts';

export interface ExplainOptions {
  files: string[];
  studyUid?: string;
  /** The calling AE title rules see for files (default: none). */
  callingAe?: string;
  json?: boolean;
}

async function expand(entries: string[]): Promise<string[]> {
  const files: string[] = [];
  for (const entry of entries) {
    if ((await stat(entry)).isDirectory()) {
      const inside = await readdir(entry, { recursive: true, withFileTypes: true });
      for (const e of inside) if (e.isFile()) files.push(path.join(e.parentPath, e.name));
    } else files.push(entry);
  }
  return files.sort();
}

/** Instance records for DICOM files, as ingest would make them (unreadable files are reported, not fatal). */
export async function recordsFromFiles(
  entries: string[],
  callingAe = '',
): Promise<{ instances: InstanceRecord[]; unreadable: string[] }> {
  const instances: InstanceRecord[] = [];
  const unreadable: string[] = [];
  for (const file of await expand(entries)) {
    try {
      const h = await readInstanceHeader(file);
      if (!h.studyUid || !h.seriesUid || !h.sopInstanceUid) throw new Error('missing UIDs');
      instances.push({
        ...h,
        studyUid: h.studyUid,
        seriesUid: h.seriesUid,
        sopInstanceUid: h.sopInstanceUid,
        sopClassUid: h.sopClassUid ?? '',
        transferSyntaxUid: h.transferSyntaxUid ?? '',
        size: 0,
        callingAe,
        callingAddress: '',
        receivedAt: 0,
      });
    } catch (err) {
      unreadable.push(`${file}: ${errorMessage(err)}`);
    }
  }
  return { instances, unreadable };
}

export async function explainRoutingCommand(config: GatewayConfig, opts: ExplainOptions): Promise<number> {
  let instances: InstanceRecord[];
  let unreadable: string[] = [];
  if (opts.studyUid) {
    const redis = createRedis(redisTarget(config));
    try {
      instances = await new StudyIndex(redis, config.redis.prefix).instances(opts.studyUid);
    } finally {
      redis.disconnect();
    }
    if (instances.length === 0) {
      console.error(`no instances of study ${opts.studyUid} in the index`);
      return 1;
    }
  } else {
    ({ instances, unreadable } = await recordsFromFiles(opts.files, opts.callingAe));
    if (instances.length === 0) {
      console.error(`no readable DICOM file${unreadable.length ? `:\n${unreadable.join('\n')}` : ''}`);
      return 1;
    }
  }
  const catalogue = await loadModels(config.modelsDir);
  const explanation: RoutingExplanation = explainRouting(
    instances,
    catalogue.models.map((m) => m.manifest),
    {
      rules: config.routing.rules,
      defaultDestination: defaultDestinationName(config),
      anatomyKeywords: config.routing.anatomyKeywords,
    },
  );
  if (opts.json) console.log(JSON.stringify({ ...explanation, unreadable }, null, 2));
  else {
    console.log(formatExplanation(explanation));
    for (const u of unreadable) console.log(`unreadable: ${u}`);
  }
  return 0;
}
