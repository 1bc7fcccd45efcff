-- Apply a continuation planned in Python from a snapshot (apply_continuation, common.lua), if the
-- run's plan-relevant state did not change since the snapshot was read (same `version`).
-- ARGV[1] (JSON): a continuation (common.lua), with scope (common.lua) and loop_items_key, loops_key.
-- ARGV[2..]: the dispatched steps' job commands.
-- Reply: {'applied', {dispatched step keys, closed status or false, run status after or false}}
--   (a run that is not Running gets nothing written: {{}, false, its status or false})
--   | {'moved', state (common.lua) read now, to plan again}.
local a = script_args()
local version = nil
if a.version then
  version = read_version(a)
  if version ~= a.version then return {'moved', read_state(a, a.scope, false)} end
end
return {'applied', apply_continuation(a, {version = version})}
