-- ForEach: record the iteration count of a claimed loop step and release its lease; the step stays
-- Running (holding no worker) until its iterations are final.
-- ARGV[1] (JSON): the step fields (common.lua), and count, items (one JSON text per item),
--   input_json (or null), loop_items_key, scope (common.lua).
-- Reply: {'ok', state (common.lua)} | {'stale', '<status>#<attempt>'}.
local a = script_args()
local step = step_get(a, a.step_key, 'status', 'attempt')
local stale = fenced_out(step, STEP.expand, a.attempt)
if stale then return stale end
redis.call('HSETNX', a.loops_key, a.step_key, a.count)
bump_version(a)
redis.call('ZREM', a.leases_key, a.member)
step_del(a, a.step_key, 'lease_until_ms', 'worker')
step_set(a, a.step_key, {{'input_json', ok(a.input_json)}})
for i, item in ipairs(a.items) do
  redis.call('HSETNX', a.loop_items_key, a.step_key .. '.' .. (i - 1), item)
end
push_event(a, 'step.pending', a.step_key, a.count .. ' iterations')
return {'ok', read_state(a, a.scope, false)}
