-- A run's snapshot for planning, read atomically (recovery, and a plan refused as out of date).
-- ARGV[1] (JSON): run_key, steps_key, loops_key, loop_items_key, scope (common.lua).
-- Reply: state (common.lua).
local a = script_args()
return read_state(a, a.scope, false)
