// What routing decided, in the form the study index keeps and the console, the API and the dry run show:
// per series, the body part used and, per model, whether it took the series and each reason it did not.
import type { SeriesRoutingRecord } from '../pipeline/study-index.ts';
import type { MatchReason, StudyPlan } from './rules.ts';

/** `[rule] criterion: seen not in expected`, the rule named only when rules are configured. */
function reasonText(reason: MatchReason, rulesConfigured: boolean): string {
  return rulesConfigured ? `[${reason.rule}] ${reason.message}` : reason.message;
}

export function routingRecords(
  plan: StudyPlan,
  run: number,
  rulesConfigured: boolean,
  modalities: Map<string, string | undefined>,
): SeriesRoutingRecord[] {
  return plan.series.map((s) => ({
    seriesUid: s.seriesUid,
    run,
    modality: modalities.get(s.seriesUid),
    bodyPart: s.anatomy.bodyPart,
    source: s.anatomy.source,
    attribute: s.anatomy.attribute,
    rule: s.anatomy.rule,
    bodyPartExamined: s.bodyPartExamined,
    models: Object.fromEntries(
      Object.entries(s.models).map(([model, e]) => [
        model,
        {
          accepted: e.accepted,
          rules: e.rules,
          reasons: e.accepted ? [] : e.reasons.map((r) => reasonText(r, rulesConfigured)),
        },
      ]),
    ),
  }));
}

/**
 * One line for a study no model takes: for each model on each series, the reasons under the rule it
 * came nearest to taking it by, e.g. `squeezenet@1.0.0 on 1.2.3: bodyPart: "KNEE" not in [CHEST]`. The
 * nearest is a rule that matched the series (its reasons are the model's own criteria: size, modality,
 * body part) with the fewest failed criteria; a rule that did not match (sent by another AE, not naming
 * the model) says less about the study. Without rules there is one group.
 */
export function noModelDetail(records: SeriesRoutingRecord[], modelsLoaded: number): string {
  if (modelsLoaded === 0) return 'no model is loaded';
  if (records.length === 0) return 'the study holds no series';
  const parts: string[] = [];
  for (const r of records) {
    for (const [model, d] of Object.entries(r.models ?? {})) {
      if (!d.accepted && d.reasons.length > 0)
        parts.push(`${model} on ${r.seriesUid}: ${nearestMiss(d.reasons).join(', ')}`);
    }
  }
  const shown = parts.slice(0, 3).join('; ');
  const more = parts.length > 3 ? ` (+${parts.length - 3} more)` : '';
  return `no model accepts this study: ${shown}${more}`;
}

/** The reasons of the nearest rule, in their order (reasons are `[rule] ...` under rules). */
function nearestMiss(reasons: string[]): string[] {
  const byRule = new Map<string, string[]>();
  for (const reason of reasons) {
    const rule = /^\[([^\]]*)\] /.exec(reason)?.[1] ?? '';
    byRule.set(rule, [...(byRule.get(rule) ?? []), reason]);
  }
  // A rule's own match criteria read `<attribute>: "<seen>" does not match [...]`, its model list `models: ...`.
  const ruleMissed = (group: string[]) =>
    group.some((r) => / does not match \[/.test(r) || /^(\[[^\]]*\] )?models: /.test(r));
  const distance = (group: string[]) => (ruleMissed(group) ? 1000 : 0) + group.length;
  let best: string[] | undefined;
  for (const group of byRule.values()) if (!best || distance(group) < distance(best)) best = group;
  return (best ?? reasons).slice(0, 4);
}
