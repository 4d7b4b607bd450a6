import { expect, it } from 'vitest'

import { integrationConfigProblem } from '../../src/syncs/definitions.ts'

/** integration.json's `pagination`: Nango's provider `paginate` block, checked at deploy. */

it('takes a pagination default in the shape of Nango provider paginate blocks', () => {
  for (const pagination of [
    {
      type: 'cursor',
      cursor_path_in_response: 'meta.next',
      cursor_name_in_request: 'cursor',
      response_path: 'items',
    },
    { type: 'link', link_rel_in_response_header: 'next', limit: 100, limit_name_in_request: 'per_page' },
    {
      type: 'offset',
      offset_name_in_request: 'offset',
      offset_start_value: 0,
      offset_calculation_method: 'per-page',
    },
    { type: 'link', link_path_in_response_body: 'next_url', in_body: false, limit: '50' },
  ]) {
    expect(
      integrationConfigProblem({ base_url: 'https://api.example.com', pagination }),
      pagination.type,
    ).toBeUndefined()
  }
})

it('refuses an unknown pagination type or field, naming it', () => {
  expect(integrationConfigProblem({ pagination: { type: 'page' } })).toMatch(/^pagination\.type/)
  expect(integrationConfigProblem({ pagination: { type: 'cursor', cursor: 'x' } })).toMatch(/^pagination/)
  expect(
    integrationConfigProblem({ pagination: { type: 'offset', offset_calculation_method: 'by-row' } }),
  ).toMatch(/^pagination\.offset_calculation_method/)
})
