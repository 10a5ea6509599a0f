// Identifying data (accession number, patient ID, patient name) in the console: shown only to users with
// the PHI permission (auth.ts), masked for the others, and every view audited (who, which study or list).
// Polling refreshes of the same view within a minute count as one view.
import { audit } from '../pipeline/audit-trail.ts';
import type { StudyIdentity } from '../pipeline/study-index.ts';
import type { Principal } from './auth.ts';

/** What users without the PHI permission see in place of a value. */
export const MASK = '•••';
/** A view of the same target by the same user within this window is one view. */
export const PHI_VIEW_WINDOW_MS = 60_000;
const MAX_TRACKED = 10_000;

/** The identity as the caller may see it: as stored, or each present value masked. */
export function visibleIdentity(
  identity: StudyIdentity | undefined,
  who: Principal,
): (StudyIdentity & { masked: boolean }) | undefined {
  if (!identity) return undefined;
  if (who.phi) return { ...identity, masked: false };
  const masked: StudyIdentity & { masked: boolean } = { masked: true };
  for (const k of Object.keys(identity) as (keyof StudyIdentity)[]) if (identity[k]) masked[k] = MASK;
  return masked;
}

export class PhiViewAuditor {
  private readonly seen = new Map<string, number>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Audits that `who` was shown identifying data of `target` (a study UID, or the list with its page). */
  async viewed(who: Principal, target: string, studyUid?: string, detail?: string): Promise<void> {
    const key = `${who.name}|${who.via}|${target}`;
    const t = this.now();
    const last = this.seen.get(key);
    if (last !== undefined && t - last < PHI_VIEW_WINDOW_MS) return;
    if (this.seen.size >= MAX_TRACKED) this.seen.clear();
    this.seen.set(key, t);
    await audit.record({
      type: 'action',
      actor: who.name,
      role: who.role,
      action: 'view-phi',
      target,
      studyUid,
      result: 'ok',
      detail,
    });
  }
}
