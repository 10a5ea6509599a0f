// Wildcard matching of DICOM attribute values (routing rules, completion conditions): '*' is any run of
// characters (also none), '?' is one character, case-insensitive. Values come off the network, so the
// matcher is the classic greedy two-pointer with backtracking to the last '*' only: O(pattern × value) at
// worst, never exponential (a RegExp built from '*A*A*A*B' took seconds on a 400-character value). Values
// are cut at their VR's maximum length first.

/** Maximum value lengths, in characters (PS3.5 Table 6.2-1), of the VRs routing matches on. */
export const VR_MAX_LENGTH = { AE: 16, CS: 16, SH: 16, LO: 64, UI: 64 } as const;
export type MatchVr = keyof typeof VR_MAX_LENGTH;

/** The value cut to its VR's maximum length (in characters, not UTF-16 units). */
export function cutToVr(value: string, vr: MatchVr): string {
  const max = VR_MAX_LENGTH[vr];
  if (value.length <= max) return value;
  return Array.from(value).slice(0, max).join('');
}

/** One entry per character, upper-cased where that keeps it one character (so '?' still means one). */
function fold(s: string): string[] {
  return Array.from(s, (ch) => {
    const up = ch.toUpperCase();
    return Array.from(up).length === 1 ? up : ch;
  });
}

/** Whether `value` matches the whole `pattern` ('*' any run, '?' one character), case-insensitively. */
export function wildcardMatch(pattern: string, value: string): boolean {
  const p = fold(pattern);
  const v = fold(value);
  let pi = 0;
  let vi = 0;
  // Where the last '*' was seen in the pattern, and the value position it currently stands for.
  let star = -1;
  let mark = 0;
  while (vi < v.length) {
    if (pi < p.length && p[pi] === '*') {
      star = pi++;
      mark = vi;
    } else if (pi < p.length && (p[pi] === '?' || p[pi] === v[vi])) {
      pi++;
      vi++;
    } else if (star >= 0) {
      // Let the last '*' swallow one more character and retry what follows it. Earlier stars never need
      // to be revisited: whatever they matched, the last one can absorb.
      pi = star + 1;
      vi = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.length && p[pi] === '*') pi++;
  return pi === p.length;
}
