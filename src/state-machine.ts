/**
 * State machines written as data (STYLE 4): a table from each state to the states it may move to.
 * Every state change is an UPDATE whose WHERE clause requires one of the states allowed to lead to
 * the new one (compare-and-set), so a late writer cannot overwrite a final state. Runs, schedules
 * and webhook deliveries each have a table; these two helpers serve all of them.
 */
export type Transitions = Readonly<Record<string, readonly string[]>>

/** The states from which `To` may be reached, as a type: a hard-coded transition in SQL names one. */
export type StateLeadingTo<T extends Transitions, To extends keyof T> = {
  [From in keyof T]: To extends T[From][number] ? From : never
}[keyof T]

/** The states from which `target` may be reached: the compare in compare-and-set. */
export function statesLeadingTo<T extends Transitions>(table: T, target: keyof T): (keyof T & string)[] {
  return (Object.keys(table) as (keyof T & string)[]).filter((from) =>
    table[from]!.includes(target as string),
  )
}
