import { statesLeadingTo } from '../state-machine.ts'

/**
 * The schedule state machine, as data (a run's is runs/states.ts). Every state change is an UPDATE
 * whose WHERE clause requires one of the states allowed to lead to the new one (compare-and-set).
 */
export const SCHEDULE_TRANSITIONS = {
  STARTED: ['PAUSED', 'DELETED'],
  PAUSED: ['STARTED', 'DELETED'],
  // A definition that reappears brings its syncs back, started or paused as it says.
  DELETED: ['STARTED', 'PAUSED'],
} as const

export type ScheduleState = keyof typeof SCHEDULE_TRANSITIONS

export const scheduleStatesLeadingTo = (target: ScheduleState) =>
  statesLeadingTo(SCHEDULE_TRANSITIONS, target)
