-- Recovery: which of these active runs has nothing in flight? Pending runs (trigger not started)
-- and Running runs whose every step is final, or is an expanded ForEach (Running, no worker).
-- ARGV[1] (JSON): run_ids [run id]; run_key, steps_key, loops_key: each a key as {text before
--   the run id, text after it}.
-- Reply: flat {run_id, status, ...} of the idle ones.
local a = cjson.decode(ARGV[1])
local idle = {}
local function key(template, run_id)
  return template[1] .. run_id .. template[2]
end
for _, run_id in ipairs(a.run_ids) do
  local status = redis.call('HGET', key(a.run_key, run_id), 'status')
  local quiet = status == 'Pending'
  if status == 'Running' then
    quiet = true
    local statuses = redis.call('HGETALL', key(a.steps_key, run_id))
    for i = 1, #statuses, 2 do
      local s = statuses[i + 1]
      if not FINAL[s] and not (s == 'Running' and redis.call('HEXISTS', key(a.loops_key, run_id), statuses[i]) == 1) then
        quiet = false
        break
      end
    end
  end
  if quiet then
    idle[#idle + 1] = run_id
    idle[#idle + 1] = status
  end
end
return idle
