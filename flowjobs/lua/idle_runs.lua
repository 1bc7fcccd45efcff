-- Recovery: which of these active runs has nothing in flight? Pending runs (trigger not started)
-- and Running runs whose every step is final, or is an expanded ForEach (Running, no worker).
-- ARGV[1] (JSON): runs [{run_id, run_key, steps_key, loops_key}].
-- Reply: flat {run_id, status, ...} of the idle ones.
local a = cjson.decode(ARGV[1])
local idle = {}
for _, r in ipairs(a.runs) do
  local status = redis.call('HGET', r.run_key, 'status')
  local quiet = status == 'Pending'
  if status == 'Running' then
    quiet = true
    local statuses = redis.call('HGETALL', r.steps_key)
    for i = 1, #statuses, 2 do
      local s = statuses[i + 1]
      if not FINAL[s] and not (s == 'Running' and redis.call('HEXISTS', r.loops_key, statuses[i]) == 1) then
        quiet = false
        break
      end
    end
  end
  if quiet then
    idle[#idle + 1] = r.run_id
    idle[#idle + 1] = status
  end
end
return idle
