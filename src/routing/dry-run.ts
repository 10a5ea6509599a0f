// The rule tester: which models would run on a study, and why each series did or did not reach each
// model, without queueing anything. The CLI (`routing explain`) and the admin API share it; it decides
// with the very code the routing processor uses (planStudy), so what it says is what routing will do.
import type { RoutingRule } from '../config/schema.ts';
import type { InstanceRecord } from '../pipeline/instance-record.ts';
import type { SeriesRoutingRecord } from '../pipeline/study-index.ts';
import type { AnatomyKeywordMap } from './anatomy.ts';
import { noModelDetail, routingRecords } from './decisions.ts';
import { planStudy, type RoutableModel } from './rules.ts';

export interface RoutingSettings {
  rules: RoutingRule[];
  defaultDestination: string;
  anatomyKeywords?: AnatomyKeywordMap;
}

export interface RoutingExplanation {
  /** What would be queued: one job per model, over these series, to these destinations. */
  jobs: { model: string; series: string[]; destinations: string[]; priority: number; rules: string[] }[];
  /** Per series: the body part used and where it came from, and each model's decision with its reasons. */
  series: SeriesRoutingRecord[];
  /** When no job would run: why, in one line (what the study's detail would say). */
  noModel?: string;
}

export function explainRouting(
  instances: InstanceRecord[],
  models: RoutableModel[],
  settings: RoutingSettings,
): RoutingExplanation {
  const plan = planStudy(instances, models, settings.rules, settings.defaultDestination, {
    anatomyKeywords: settings.anatomyKeywords,
  });
  const modalities = new Map(instances.map((i) => [i.seriesUid, i.modality]));
  const series = routingRecords(plan, 0, settings.rules.length > 0, modalities).map(
    ({ run: _run, ...r }) => r,
  );
  return {
    jobs: plan.work.map((w) => ({
      model: `${w.modelId}@${w.modelVersion}`,
      series: w.seriesUids,
      destinations: w.destinations,
      priority: w.priority,
      rules: w.rules,
    })),
    series,
    ...(plan.work.length === 0 ? { noModel: noModelDetail(series, models.length) } : {}),
  };
}

/** The explanation as lines for a terminal. */
export function formatExplanation(e: RoutingExplanation): string {
  const lines: string[] = [];
  if (e.jobs.length === 0) lines.push(`No model would run: ${e.noModel ?? ''}`);
  for (const j of e.jobs)
    lines.push(
      `RUN ${j.model} on ${j.series.length} series → ${j.destinations.join(', ')} (priority ${j.priority}; rules: ${j.rules.join(', ')})`,
    );
  for (const s of e.series) {
    const part = s.bodyPart ? `${s.bodyPart} from ${s.source}` : `none (${s.source})`;
    lines.push(`series ${s.seriesUid} [${s.modality ?? '?'}] body part: ${part}`);
    for (const [model, d] of Object.entries(s.models ?? {})) {
      lines.push(
        d.accepted
          ? `  ✓ ${model} (rules: ${d.rules.join(', ')})`
          : `  ✗ ${model}: ${d.reasons.join('; ') || 'not selected'}`,
      );
    }
  }
  return lines.join('\n');
}
