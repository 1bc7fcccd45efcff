-- Apply a continuation planned in Python from a snapshot (apply_continuation, common.lua), if the
-- run's plan-relevant state did not change since the snapshot was read (same `version`).
-- ARGV[1] (JSON): a continuation (common.lua), with scope (common.lua) and loop_items_key, loops_key.
-- ARGV[2..]: the dispatched steps' job commands.
-- Reply: {'applied', {dispatched step keys, closed status or false, run status after or false}}
--   (a run that is not Running gets nothing written: {{}, false, its status or false})
--   | {'moved', state (common.lua) read now, to plan again}.
local a = script_args()
-- One read of each hash: the plan version and the statuses of the steps the plan dispatches (its
-- ledger, then checked without a write of its own); the run's status, cancel flag and the plan
-- version of a run from before STEPS_VERSION.
local fields = {STEPS_VERSION}
for _, d in ipairs(a.dispatch or {}) do fields[#fields + 1] = d.step_key end
local values = hmget_all(a.steps_key, fields)
local run = redis.call('HMGET', a.run_key, 'status', 'cancel_requested', 'steps_version')
local version = version_of(values[1], run[3])
if a.version and version ~= a.version then return {'moved', read_state(a, a.scope, false)} end
local statuses = {}
for i, d in ipairs(a.dispatch or {}) do statuses[d.step_key] = values[1 + i] end
return {'applied', apply_continuation(a,
  {run_status = run[1], cancelled = run[2] == '1', statuses = statuses, version = version})}
