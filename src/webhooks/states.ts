import { type StateLeadingTo, statesLeadingTo } from '../state-machine.ts'

/**
 * A webhook delivery's states, as data (a run's are runs/states.ts). Every state change is an
 * UPDATE whose WHERE clause requires one of the states allowed to lead to the new one
 * (compare-and-set): a deliverer whose claim ran out while it was sending (another one claimed the
 * delivery and finished it), or one that answers after the webhook was removed, cannot overwrite
 * what was recorded meanwhile.
 */
export const DELIVERY_TRANSITIONS = {
  // A failed attempt with attempts left stays pending, its next attempt scheduled.
  pending: ['pending', 'delivered', 'failed'],
  delivered: [],
  // Put back in the queue by hand (retryFailed), once the receiver is fixed.
  failed: ['pending'],
} as const

export type DeliveryState = keyof typeof DELIVERY_TRANSITIONS

export type DeliveryStateLeadingTo<To extends DeliveryState> = StateLeadingTo<typeof DELIVERY_TRANSITIONS, To>

export const deliveryStatesLeadingTo = (target: DeliveryState) =>
  statesLeadingTo(DELIVERY_TRANSITIONS, target)
