/**
 * The run and schedule state machines, as data. Every state change is an UPDATE whose WHERE clause
 * requires one of the states allowed to lead to the new one (compare-and-set), so a late writer
 * (a run that expired while its worker was away) can never overwrite a final state.
 */
export const RUN_TRANSITIONS = {
  CREATED: ['STARTED', 'CANCELLED', 'EXPIRED'],
  STARTED: ['SUCCEEDED', 'FAILED', 'CANCELLED', 'EXPIRED'],
  SUCCEEDED: [],
  FAILED: [],
  CANCELLED: [],
  EXPIRED: [],
} as const

export type RunState = keyof typeof RUN_TRANSITIONS
export type FinalRunState = 'SUCCEEDED' | 'FAILED' | 'CANCELLED' | 'EXPIRED'

export const SCHEDULE_TRANSITIONS = {
  STARTED: ['PAUSED', 'DELETED'],
  PAUSED: ['STARTED', 'DELETED'],
  // A definition that reappears brings its syncs back, started or paused as it says.
  DELETED: ['STARTED', 'PAUSED'],
} as const

export type ScheduleState = keyof typeof SCHEDULE_TRANSITIONS

/** The states from which `target` may be reached: the compare in compare-and-set. */
export function runStatesLeadingTo(target: RunState): RunState[] {
  return (Object.keys(RUN_TRANSITIONS) as RunState[]).filter((from) =>
    (RUN_TRANSITIONS[from] as readonly RunState[]).includes(target),
  )
}

export function scheduleStatesLeadingTo(target: ScheduleState): ScheduleState[] {
  return (Object.keys(SCHEDULE_TRANSITIONS) as ScheduleState[]).filter((from) =>
    (SCHEDULE_TRANSITIONS[from] as readonly ScheduleState[]).includes(target),
  )
}
